//! `bucketgate-bench-noop-authz 127.0.0.1:PORT`: an Envoy ext_authz (v3
//! gRPC) service that answers OK at once, with no header mutation and no
//! metadata. `make bench` puts it behind the same Envoy ext_authz filter as
//! the ext_authz plane (the `noop-authz` variant) to measure what Envoy
//! itself spends on a check: the floor of that plane.

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: bucketgate-bench-noop-authz 127.0.0.1:PORT")?
        .parse()?;
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve(addr)
        .await?;
    Ok(())
}
