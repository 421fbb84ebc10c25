//! Garbage on the proto decoding path: random bytes sent as the message of every public method
//! of a real node (through a raw gRPC codec, so nothing on our side shapes them). Every call is
//! answered with a status, the node keeps serving, and the state is unchanged. (The bank codec
//! has its own properties in `bank/src/codec.rs`.)

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;
use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;

const METHODS: [&str; 16] = [
    "/yinyi.v1.PaymentService/IssueCard",
    "/yinyi.v1.PaymentService/IssueCards",
    "/yinyi.v1.PaymentService/DepositCash",
    "/yinyi.v1.PaymentService/TopUpBankCard",
    "/yinyi.v1.PaymentService/PayBill",
    "/yinyi.v1.PaymentService/Refund",
    "/yinyi.v1.PaymentService/Withdraw",
    "/yinyi.v1.PaymentService/ReplaceCard",
    "/yinyi.v1.PaymentService/QueryBalance",
    "/yinyi.v1.PaymentService/ListTransactions",
    "/yinyi.v1.HisService/PostBill",
    "/yinyi.v1.HisService/CancelBill",
    "/yinyi.v1.TerminalService/RegisterTerminal",
    "/yinyi.v1.TerminalService/OpenShift",
    "/yinyi.v1.AdminService/SetOverdraft",
    "/yinyi.v1.AdminService/Reconcile",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_every_method_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    let leader = c.wait_for_leader(Duration::from_secs(30)).await.unwrap();
    let before = c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", c.addr(leader)))
        .unwrap()
        .tls_config(c.client_tls())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let cases = runner.run(
        &(
            0..METHODS.len(),
            prop::collection::vec(any::<u8>(), 0..2048),
        ),
        |(method, body)| {
            let channel = channel.clone();
            let outcome = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(yinyi_tests::raw::call(
                    channel,
                    Some(c.credential()),
                    METHODS[method],
                    body,
                ))
            });
            // Garbage is refused; it never passes as a request that does something.
            match outcome {
                Err(status) => prop_assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::Internal
                            | Code::NotFound
                            | Code::FailedPrecondition
                            | Code::PermissionDenied
                            | Code::Unimplemented
                    ),
                    "{}: {status:?}",
                    METHODS[method]
                ),
                Ok(reply) => prop_assert!(false, "{} accepted garbage: {reply:?}", METHODS[method]),
            }
            Ok(())
        },
    );
    cases.unwrap();

    // Still serving, every node, and nothing changed.
    let after = c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let digests =
        |s: &[yinyi_consensus::NodeStatus]| s.iter().map(|n| n.digest.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&after), digests(&before));
    assert_eq!(after.len(), 3);
}
