//! Two tokio nodes over real loopback sockets run the shared adapter scenario.

use silver_p2p_driver::testing::{
    direct_send_scenario, loopback, paused_reading_scenario, slow_reader_config, test_config,
    tight_send_config, two_node_scenario,
};
use silver_p2p_tokio::NetworkManager;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_over_loopback() {
    let start = || NetworkManager::new(test_config(), loopback()).start();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    two_node_scenario(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_direct_messages_meets_back_pressure_and_arrives_whole() {
    let start = || NetworkManager::new(tight_send_config(), loopback()).start();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    direct_send_scenario(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_paused_by_the_rate_limit_loses_nothing() {
    let a = NetworkManager::new(test_config(), loopback())
        .start()
        .await
        .unwrap();
    let b = NetworkManager::new(slow_reader_config(), loopback())
        .start()
        .await
        .unwrap();
    paused_reading_scenario(a, b).await;
}

#[tokio::test]
async fn ipv6_loopback_works_where_the_machine_has_it() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    drop(probe);
    let start = || NetworkManager::new(test_config(), vec!["[::1]:0".parse().unwrap()]).start();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    two_node_scenario(a, b).await;
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = NetworkManager::new(test_config(), vec![addr])
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// The loop reads a socket many times within one poll of its task when many messages
/// arrive; tokio's cooperative budget (128 operations a poll) must not turn a read into a
/// spurious `WouldBlock`, which would leave the readiness set and the loop spinning on it.
#[tokio::test]
async fn a_reader_keeps_reading_past_the_cooperative_budget() {
    use silver_p2p_driver::{ReadHalf, Runtime, WriteHalf};
    use silver_p2p_tokio::Tokio;
    use std::sync::Arc;

    const TOTAL: usize = 4096;
    const PER_READ: usize = 8;
    let rt = Tokio;
    let (listener, addr) = rt.bind(loopback()[0]).await.unwrap();
    let (dialed, accepted) = tokio::join!(rt.connect(addr), rt.accept(Arc::new(listener)));
    let (mut reader, _writer) = dialed.unwrap();
    let (_reader, mut writer, _) = accepted.unwrap();
    writer.write_all(&[7; TOTAL]).await.unwrap();
    reader.readable().await.unwrap();
    // Loopback has delivered everything by now; from here on nothing awaits, so every read
    // below happens in one poll. Each fills its 8 bytes, so the readiness stays set.
    let (mut got, mut reads) = (0, 0);
    while got < TOTAL {
        let mut buf = Vec::with_capacity(PER_READ);
        match reader.try_read_buf(&mut buf) {
            Ok(0) => panic!("end of stream after {got} bytes"),
            Ok(n) => {
                assert!(buf.iter().all(|&b| b == 7));
                got += n;
                reads += 1;
            }
            Err(e) => panic!("read {reads} failed after {got} of {TOTAL} bytes: {e}"),
        }
    }
    assert!(
        reads > 128,
        "the test must outlast the budget: {reads} reads"
    );
}
