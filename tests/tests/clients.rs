//! What a client in another language meets on the wire (issue 22), on a real 3-node TLS
//! cluster: reflection in both versions on every node (followers too), the `google.rpc` types
//! resolvable through it, and a refusal with a `google.rpc.ErrorInfo` on every path — while the
//! leader is killed and while the quorum is lost, a follower answers `UNAVAILABLE NO_LEADER`
//! (never tonic's bare connection error). The Python example runs against the same kind of
//! cluster in `python_example.rs`.

use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};
use yinyi_api::error::reason_of;
use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;
use yinyi_tests::raw;

const T: Duration = Duration::from_secs(30);

fn channel(c: &LocalCluster, id: u64) -> Channel {
    Endpoint::from_shared(format!("https://{}", c.addr(id)))
        .unwrap()
        .tls_config(c.client_tls())
        .unwrap()
        .connect_lazy()
}

/// An empty call of `method` on node `id` as `credential`: always refused, and the refusal is
/// what these checks read.
async fn refused(c: &LocalCluster, id: u64, credential: &str, method: &str) -> tonic::Status {
    raw::call(channel(c, id), Some(credential), method, Vec::new())
        .await
        .expect_err("an empty request is refused")
}

const DEPOSIT: &str = "/yinyi.v1.PaymentService/DepositCash";
const BALANCE: &str = "/yinyi.v1.PaymentService/QueryBalance";

/// One v1alpha reflection request and its answer.
async fn reflect(channel: Channel, request: MessageRequest) -> ServerReflectionResponse {
    let mut client = ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }]))
        .await
        .expect("v1alpha reflection answers")
        .into_inner();
    answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("one answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_in_both_versions_and_error_info_on_every_refusal_even_without_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::prepare(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    // Node 1 logs JSON for the hospital's log collector (issue 22, point 5).
    c.set_node_env(1, vec![("YINYI_LOG_FORMAT".into(), "json".into())]);
    for id in 1..=3 {
        c.spawn(id).unwrap();
    }
    let leader = c.wait_for_leader(T).await.unwrap();

    // Reflection v1alpha on the leader and on each follower: the services, and the google.rpc
    // error types a tool needs to print a refusal's details.
    for id in 1..=3u64 {
        let listed = reflect(channel(&c, id), MessageRequest::ListServices(String::new())).await;
        let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
            panic!("node {id}: {listed:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for service in [
            "yinyi.v1.PaymentService",
            "yinyi.v1.HisService",
            "yinyi.v1.TerminalService",
            "yinyi.v1.AdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&service), "node {id}: {names:?}");
        }
        let file = reflect(
            channel(&c, id),
            MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into()),
        )
        .await;
        assert!(
            matches!(
                file.message_response,
                Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
            ),
            "node {id}: google.rpc.ErrorInfo not resolvable: {file:?}"
        );
    }

    // The leader killed: a follower either still points at it (the forward fails) or already
    // knows there is none, or a new leader answers. Every refusal carries an ErrorInfo.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let credential = c.credential().to_string();
    c.kill(leader).unwrap();
    let mut no_leader = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let status = refused(&c, follower, &credential, DEPOSIT).await;
        let reason =
            reason_of(&status).unwrap_or_else(|| panic!("a refusal without ErrorInfo: {status:?}"));
        match (status.code(), reason.as_str()) {
            (Code::Unavailable, "NO_LEADER") => no_leader += 1,
            // A new leader was elected and checked the (empty) request.
            (Code::InvalidArgument, _) => {}
            (Code::DeadlineExceeded, "LEADER_TIMEOUT") => {}
            other => panic!("unexpected answer during the failover: {other:?} {status:?}"),
        }
    }
    assert!(no_leader > 0, "no NO_LEADER seen while the leader was down");

    // The quorum lost: the new leader killed too, the last node (a follower) answers NO_LEADER,
    // with its reason, every time.
    let second = c.wait_for_leader(T).await.unwrap();
    c.kill(second).unwrap();
    let follower = (1..=3).find(|&id| id != leader && id != second).unwrap();
    for _ in 0..5 {
        let status = refused(&c, follower, &credential, DEPOSIT).await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("NO_LEADER"),
            "{status:?}"
        );
    }
    // Authentication refusals carry their reason too, with or without a leader.
    let status = refused(&c, follower, "nobody:0000", BALANCE).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("CREDENTIAL_UNKNOWN"),
        "{status:?}"
    );
    let status = refused(&c, follower, "no-colon", BALANCE).await;
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("CREDENTIAL_MALFORMED"),
        "{status:?}"
    );

    // A leader cut off from both followers keeps its role (openraft 0.9 does not step down),
    // but after a few seconds without a majority it refuses at once with NO_LEADER instead of
    // holding requests it cannot commit.
    c.spawn(leader).unwrap();
    c.spawn(second).unwrap();
    // Settled: every node at one term and one applied index, so the leader found is the one
    // that stays (a node back from a lost quorum may have called elections meanwhile).
    c.wait_converged(T).await.unwrap();
    let alone = c.wait_for_leader(T).await.unwrap();
    for id in (1..=3).filter(|&id| id != alone) {
        c.kill(id).unwrap();
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let status = refused(&c, alone, &credential, DEPOSIT).await;
        if status.code() == Code::Unavailable
            && reason_of(&status).as_deref() == Some("NO_LEADER")
            && status.message().contains("no majority")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the isolated leader never said NO_LEADER: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The logs: node 1's are one JSON object a line; the others' plain text; none coloured.
    let json = std::fs::read_to_string(c.nodes[&1].data.with_extension("log")).unwrap();
    assert!(json.lines().count() > 3, "{json}");
    for line in json.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
    for id in 2..=3 {
        let text = std::fs::read_to_string(c.nodes[&id].data.with_extension("log")).unwrap();
        assert!(
            text.contains(" INFO ") && !text.contains('\u{1b}'),
            "{text}"
        );
    }
}
