//! What the emulator cannot show (it ignores paging and never throttles) is
//! tested here at the SDK boundary, with scripted HTTP responses shaped like
//! EC2's.

use std::time::Duration;

use autosnap_aws::{AwsError, CallSite, Ec2, SnapshotQuery};
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;

const ACCOUNT: &str = "123456789012";

fn snapshot_xml(id: &str, time: &str) -> String {
    format!(
        "<item><snapshotId>{id}</snapshotId><volumeId>vol-0123abcd</volumeId><status>completed</status>\
         <startTime>{time}</startTime><progress>100%</progress><ownerId>{ACCOUNT}</ownerId>\
         <volumeSize>8</volumeSize><encrypted>false</encrypted>\
         <tagSet><item><key>autosnap:managed</key><value>true</value></item></tagSet></item>"
    )
}

fn page(items: &[String], next: Option<&str>) -> http::Response<SdkBody> {
    let token = next
        .map(|t| format!("<nextToken>{t}</nextToken>"))
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <DescribeSnapshotsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>r</requestId><snapshotSet>{}</snapshotSet>{token}</DescribeSnapshotsResponse>",
        items.join("")
    );
    http::Response::builder()
        .status(200)
        .body(SdkBody::from(body))
        .unwrap()
}

fn error(status: u16, code: &str) -> http::Response<SdkBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code>\
         <Message>scripted {code}</Message></Error></Errors><RequestID>r</RequestID></Response>"
    );
    http::Response::builder()
        .status(status)
        .body(SdkBody::from(body))
        .unwrap()
}

fn request() -> http::Request<SdkBody> {
    http::Request::builder()
        .uri("https://ec2.us-east-1.amazonaws.com/")
        .body(SdkBody::empty())
        .unwrap()
}

fn ec2_with(events: Vec<ReplayEvent>, attempts: u32) -> (Ec2, StaticReplayClient) {
    let http = StaticReplayClient::new(events);
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .http_client(http.clone())
        .build();
    let site = CallSite {
        service: "EC2",
        region: "us-east-1".into(),
        account: Some(ACCOUNT.into()),
        endpoint: None,
    };
    (
        Ec2::new(aws_sdk_ec2::Client::from_conf(conf), site, ACCOUNT.into()),
        http,
    )
}

fn body_of(req: &aws_smithy_runtime_api::http::Request) -> String {
    String::from_utf8_lossy(req.body().bytes().unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn list_snapshots_follows_every_page_and_filters_by_owner() {
    let events = vec![
        ReplayEvent::new(
            request(),
            page(
                &[
                    snapshot_xml("snap-00000001", "2026-01-01T00:00:00.000Z"),
                    snapshot_xml("snap-00000002", "2026-01-03T00:00:00.000Z"),
                ],
                Some("token-1"),
            ),
        ),
        // An empty page that still carries a token must not end the listing.
        ReplayEvent::new(request(), page(&[], Some("token-2"))),
        ReplayEvent::new(
            request(),
            page(
                &[snapshot_xml("snap-00000003", "2026-01-02T00:00:00.000Z")],
                None,
            ),
        ),
    ];
    let (ec2, http) = ec2_with(events, 1);
    let snaps = ec2.list_snapshots(&SnapshotQuery::default()).await.unwrap();
    let ids: Vec<&str> = snaps.iter().map(|s| s.snapshot_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["snap-00000002", "snap-00000003", "snap-00000001"],
        "all pages, newest first"
    );
    assert!(snaps.iter().all(|s| s.managed));

    let bodies: Vec<String> = http.actual_requests().map(body_of).collect();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies[0].contains("Filter.1.Name=owner-id"),
        "{}",
        bodies[0]
    );
    assert!(bodies[0].contains(&format!("Filter.1.Value.1={ACCOUNT}")));
    assert!(bodies[0].contains("MaxResults=1000"));
    assert!(!bodies[0].contains("NextToken"));
    assert!(bodies[1].contains("NextToken=token-1"), "{}", bodies[1]);
    assert!(bodies[2].contains("NextToken=token-2"), "{}", bodies[2]);
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let events = vec![
        ReplayEvent::new(request(), error(503, "RequestLimitExceeded")),
        ReplayEvent::new(request(), error(503, "RequestLimitExceeded")),
        ReplayEvent::new(
            request(),
            page(
                &[snapshot_xml("snap-00000001", "2026-01-01T00:00:00.000Z")],
                None,
            ),
        ),
    ];
    let (ec2, http) = ec2_with(events, 3);
    let snaps = ec2.list_snapshots(&SnapshotQuery::default()).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(http.actual_requests().count(), 3);
}

#[tokio::test]
async fn throttling_past_the_attempts_is_classified() {
    let events = vec![
        ReplayEvent::new(request(), error(503, "RequestLimitExceeded")),
        ReplayEvent::new(request(), error(503, "RequestLimitExceeded")),
    ];
    let (ec2, _http) = ec2_with(events, 2);
    let err = ec2
        .list_snapshots(&SnapshotQuery::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::Throttled { .. }), "{err:?}");
    assert!(err.to_string().contains("throttling"), "{err}");
}

#[tokio::test]
async fn access_denied_is_not_retried_and_points_to_iam_policy() {
    let events = vec![ReplayEvent::new(
        request(),
        error(403, "UnauthorizedOperation"),
    )];
    let (ec2, http) = ec2_with(events, 3);
    let err = ec2.delete_snapshot("snap-00000001").await.unwrap_err();
    assert!(matches!(err, AwsError::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("iam-policy"));
    assert_eq!(
        http.actual_requests().count(),
        1,
        "no retry of a permanent error"
    );
}

#[tokio::test]
async fn in_use_snapshot_is_classified() {
    let events = vec![ReplayEvent::new(
        request(),
        error(400, "InvalidSnapshot.InUse"),
    )];
    let (ec2, _http) = ec2_with(events, 1);
    let err = ec2.delete_snapshot("snap-00000001").await.unwrap_err();
    match err {
        AwsError::InUse { kind, id, .. } => {
            assert_eq!(kind, "snapshot");
            assert_eq!(id, "snap-00000001");
        }
        other => panic!("{other:?}"),
    }
}

fn bare_status(status: u16, body: &str) -> http::Response<SdkBody> {
    http::Response::builder()
        .status(status)
        .body(SdkBody::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn an_empty_error_names_the_service_operation_and_http_status() {
    // A proxy or a broken endpoint answering with no error document: the message must not
    // read "failed (Unknown): " but say which call got which status.
    for (status, body) in [(500, ""), (502, "<html>Bad Gateway</html>"), (404, "")] {
        let events = vec![ReplayEvent::new(request(), bare_status(status, body))];
        let (ec2, _http) = ec2_with(events, 1);
        let err = ec2
            .list_volumes(&autosnap_aws::VolumeQuery::default())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("EC2 DescribeVolumes failed: HTTP {status}")),
            "{text}"
        );
        assert!(text.contains("with no error message"), "{text}");
        assert!(!text.contains("Unknown"), "{text}");
        assert!(!text.ends_with(": "), "{text}");
    }
}

#[tokio::test]
async fn an_error_code_without_a_message_says_so() {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error>\
                <Code>SomethingNew</Code></Error></Errors><RequestID>r</RequestID></Response>";
    let events = vec![ReplayEvent::new(request(), bare_status(400, body))];
    let (ec2, _http) = ec2_with(events, 1);
    let err = ec2
        .list_volumes(&autosnap_aws::VolumeQuery::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "EC2 DescribeVolumes failed (SomethingNew): HTTP 400 with no error message"
    );
}
