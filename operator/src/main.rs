//! `bucketgate-operator`: `crd` prints the CRDs; `run` starts the controller.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bucketgate-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the BucketClaim and S3Backend CRDs as YAML (or write them to
    /// `--out DIR` as bucketclaim.yaml and s3backend.yaml).
    Crd {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out } => match print_crds(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn print_crds(out: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let docs = bucketgate_operator::crd::crd_yaml()?;
    match out {
        Some(dir) => {
            for (file, doc) in bucketgate_operator::crd::CRD_FILES.iter().zip(docs.iter()) {
                std::fs::write(dir.join(file), doc)?;
            }
        }
        None => print!("{}---\n{}", docs[0], docs[1]),
    }
    Ok(())
}
