//! The Python example (`examples/python/visit.py`, stock grpcio) against a real 3-node TLS
//! cluster, so the guide a vendor copies cannot drift from the server: reflection v1alpha on
//! every node, a patient's visit with a retry under the same request id, ErrorInfo on every
//! kind of refusal; then, with the leader and one follower killed, `UNAVAILABLE NO_LEADER` from
//! the node left. Its virtualenv comes from `scripts/ensure-deps.sh` (`make test` runs it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;

const T: Duration = Duration::from_secs(30);

fn python() -> PathBuf {
    let venv = std::env::var_os("YINYI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/yinyi/venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python virtualenv at {}: run scripts/ensure-deps.sh (make test does)",
        venv.display()
    );
    python
}

fn visit(c: &LocalCluster, nodes: &[String], prefix: &str, extra: &[&str]) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(python())
        .current_dir(&repo)
        .arg("examples/python/visit.py")
        .args(["--nodes", &nodes.join(",")])
        .arg("--ca")
        .arg(c.tls_dir().join("ca.pem"))
        .args(["--credential", c.credential(), "--prefix", prefix])
        .args(extra)
        .output()
        .expect("run the Python example");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the Python example failed:\n{text}");
    assert!(text.contains("all checks held"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_a_visit_and_reads_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    visit(&c, &c.addrs(), "PY1", &[]);

    // The quorum lost, the node left a follower: it says NO_LEADER, with the reason.
    let survivor = (1..=3).find(|&id| id != leader).unwrap();
    for id in (1..=3).filter(|&id| id != survivor) {
        c.kill(id).unwrap();
    }
    visit(&c, &[c.addr(survivor)], "PY2", &["--expect-no-leader"]);
}
