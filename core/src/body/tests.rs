use super::*;
use crate::error::AccessDeniedReason;

fn delete_body(keys: &[&str]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for k in keys {
        s.push_str("<Object><Key>");
        s.push_str(k);
        s.push_str("</Key></Object>");
    }
    s.push_str("<Quiet>true</Quiet></Delete>");
    s
}

fn is_malformed(r: Result<(), DenyReason>) -> bool {
    matches!(r, Err(DenyReason::MalformedXml(_)))
}

#[test]
fn keys_are_read_as_a_parser_resolves_them() {
    let body = "<Delete>\n  <Object><Key>a//b</Key><VersionId>v1</VersionId></Object>\n  \
                <Object><Key> spaced &amp; &lt;odd&gt; &#x41;&#66; </Key></Object>\n  \
                <Object><Key><![CDATA[c<d]]>e<!-- note -->f</Key><ETag>\"x\"</ETag></Object>\n</Delete>";
    assert_eq!(
        delete_objects_keys(body.as_bytes()).unwrap(),
        vec!["a//b", " spaced & <odd> AB ", "c<def"]
    );
    // The SDKs' own rendering (boto3: namespace, Quiet).
    assert_eq!(
        delete_objects_keys(delete_body(&["k1", "dir/k2"]).as_bytes()).unwrap(),
        vec!["k1", "dir/k2"]
    );
    assert_eq!(
        check(
            Operation::DeleteObjects,
            delete_body(&["k1", "a//b", ".hidden"]).as_bytes()
        ),
        Ok(())
    );
}

#[test]
fn bad_keys_refuse_the_whole_request() {
    for k in [
        "../other/k",
        "x/../../other/k",
        "x//../../other/k",
        "&#46;&#46;/other/k",
        "&#x2e;&#x2E;/other",
        ".&#46;/other",
        "x\\..\\..\\other",
        "%2e%2e/other",
        "/",
        "//",
    ] {
        let body = delete_body(&["fine", k]);
        assert!(
            matches!(
                check(Operation::DeleteObjects, body.as_bytes()),
                Err(DenyReason::InvalidArgument(_))
            ),
            "{k}"
        );
    }
    for k in [
        ".bucketgate/owner.json",
        "./.bucketgate/owner.json",
        "//.bucketgate/owner.json",
        ".BUCKETGATE/x",
        "&#46;bucketgate/owner.json",
    ] {
        let body = delete_body(&["fine", k]);
        let r = check(Operation::DeleteObjects, body.as_bytes());
        assert!(
            r == Err(DenyReason::AccessDenied(AccessDeniedReason::ReservedKey))
                || matches!(r, Err(DenyReason::InvalidArgument(_))),
            "{k}: {r:?}"
        );
    }
}

#[test]
fn malformed_bodies() {
    let too_many: Vec<String> = (0..=MAX_DELETE_KEYS).map(|i| format!("k{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let exactly: Vec<&str> = too_many[..MAX_DELETE_KEYS].to_vec();
    assert_eq!(
        check(Operation::DeleteObjects, delete_body(&exactly).as_bytes()),
        Ok(())
    );
    let bodies: Vec<String> = vec![
        String::new(),
        "not xml".into(),
        "<Delete>".into(),
        "<Delete><Object><Key>k</Key></Object>".into(),
        "<Delete><Object><Key>k</Key></Object></Delete><Delete/>".into(),
        "<Delete></Delete>".into(),
        "<Delete/>".into(),
        "<Delete><Object></Object></Delete>".into(),
        "<Delete><Object><VersionId>v</VersionId></Object></Delete>".into(),
        "<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>".into(),
        "<Delete><Object><Key>a<b/></Key></Object></Delete>".into(),
        "<Delete><Object><Key>a</Key><Other>x</Other></Object></Delete>".into(),
        "<Delete><Other/><Object><Key>a</Key></Object></Delete>".into(),
        "<Delete>text<Object><Key>a</Key></Object></Delete>".into(),
        "<Remove><Object><Key>a</Key></Object></Remove>".into(),
        "<s3:Delete xmlns:s3=\"x\"><s3:Object><s3:Key>a</s3:Key></s3:Object></s3:Delete>".into(),
        "<!DOCTYPE d [<!ENTITY e \"../other/k\">]><Delete><Object><Key>&e;</Key></Object></Delete>"
            .into(),
        "<Delete><Object><Key>&e;</Key></Object></Delete>".into(),
        "<Delete><Object><Key>&#0;</Key></Object></Delete>".into(),
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?><Delete><Object><Key>a</Key></Object></Delete>"
            .into(),
        "<?pi x?><Delete><Object><Key>a</Key></Object></Delete>".into(),
        "<Delete><Object><Key>a</Key></Object></Delete>trailing".into(),
        "<Delete><Object><Key>a</Key></Object></Delete2>".into(),
        delete_body(&too_many),
        format!(
            "<Delete><Object><Key>{}</Key></Object></Delete>",
            "a".repeat(MAX_BODY_BYTES)
        ),
    ];
    for b in &bodies {
        assert!(
            is_malformed(check(Operation::DeleteObjects, b.as_bytes())),
            "{:.120}",
            b
        );
    }
    // Invalid UTF-8 inside a key.
    assert!(is_malformed(check(
        Operation::DeleteObjects,
        b"<Delete><Object><Key>\xff</Key></Object></Delete>"
    )));
}

#[test]
fn restore_object_bodies() {
    let ok = [
        "",
        "<RestoreRequest><Days>2</Days><GlacierJobParameters><Tier>Bulk</Tier></GlacierJobParameters></RestoreRequest>",
        "<RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>1</Days></RestoreRequest>",
    ];
    for b in ok {
        assert_eq!(check(Operation::RestoreObject, b.as_bytes()), Ok(()), "{b}");
    }
    let refused = [
        "<RestoreRequest><OutputLocation><S3><BucketName>other</BucketName><Prefix>p</Prefix></S3></OutputLocation></RestoreRequest>",
        "<RestoreRequest><Type>SELECT</Type></RestoreRequest>",
        "<RestoreRequest><SelectParameters><Expression>select</Expression></SelectParameters></RestoreRequest>",
        "<Other><Days>1</Days></Other>",
    ];
    for b in refused {
        assert_eq!(
            check(Operation::RestoreObject, b.as_bytes()),
            Err(DenyReason::AccessDenied(
                AccessDeniedReason::OperationNotAllowed
            )),
            "{b}"
        );
    }
    assert!(is_malformed(check(
        Operation::RestoreObject,
        b"<RestoreRequest>"
    )));
    assert!(is_malformed(check(
        Operation::RestoreObject,
        b"<!DOCTYPE r><RestoreRequest><Days>1</Days></RestoreRequest>"
    )));
}

#[test]
fn other_operations_pass_untouched() {
    assert_eq!(check(Operation::PutObject, b"<Delete>not read"), Ok(()));
    assert!(must_inspect(Operation::DeleteObjects) && must_inspect(Operation::RestoreObject));
    assert!(!must_inspect(Operation::PutObject));
}
