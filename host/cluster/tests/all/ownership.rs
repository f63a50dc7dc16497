//! Owner keys, fencing tokens, guarded writes and the owners watch on a real etcd.

use std::time::Duration;

use steward_cluster::{Error, OwnerChanged, OwnersWatch, join};
use tokio::time::timeout;

use steward_cluster::harness::EtcdCluster;

async fn next_change(watch: &mut OwnersWatch, limit: Duration, what: &str) -> OwnerChanged {
    match timeout(limit, watch.recv()).await {
        Ok(Some(change)) => change,
        Ok(None) => panic!("the owners watch ended while waiting for {what}"),
        Err(_) => panic!("no owner change within {limit:?} while waiting for {what}"),
    }
}

#[tokio::test]
async fn acquire_is_exclusive_and_each_new_owner_gets_a_larger_token() {
    let etcd = EtcdCluster::start().await;
    let a = join(etcd.node_config("exclusive", "a", Duration::from_secs(2))).await.expect("join a");
    let b = join(etcd.node_config("exclusive", "b", Duration::from_secs(2))).await.expect("join b");
    let (own_a, own_b) = (a.ownership(), b.ownership());

    let first = own_a.acquire("g").await.expect("acquire").expect("g was free");
    assert_eq!(own_b.acquire("g").await.expect("acquire"), None, "b cannot take a's group");
    assert_eq!(own_a.acquire("g").await.expect("acquire"), Some(first), "acquiring again returns the same ownership");

    assert!(own_a.release("g", first).await.expect("release"));
    let second = own_b.acquire("g").await.expect("acquire").expect("g was released");
    assert!(second > first, "tokens grow: {first} then {second}");
    assert_eq!(own_a.acquire("g").await.expect("acquire"), None);
    assert!(!own_a.release("g", first).await.expect("release"), "a stale token releases nothing");

    assert!(own_b.release("g", second).await.expect("release"));
    let third = own_a.acquire("g").await.expect("acquire").expect("g was released");
    assert!(third > second, "tokens grow: {second} then {third}");
    let owners = own_b.list_owners().await.expect("owners");
    assert_eq!(
        owners.iter().map(|owner| (owner.group.as_str(), owner.node.as_str(), owner.token)).collect::<Vec<_>>(),
        [("g", "a", third)]
    );
}

#[tokio::test]
async fn a_stale_owners_write_fails_once_its_lease_expired_and_another_node_acquired() {
    let etcd = EtcdCluster::start().await;
    let a = join(etcd.node_config("stale", "a", Duration::from_secs(1))).await.expect("join a");
    let b = join(etcd.node_config("stale", "b", Duration::from_secs(1))).await.expect("join b");
    let (own_a, own_b) = (a.ownership(), b.ownership());
    let mut watch = own_b.watch_owners().await.expect("watch");

    let token_a = own_a.acquire("g").await.expect("acquire").expect("g was free");
    own_a.guarded_put("g", token_a, "state", "from a").await.expect("the owner writes");
    assert_eq!(next_change(&mut watch, Duration::from_secs(5), "a's ownership").await.owner.as_deref(), Some("a"));

    // a stops keeping its lease (as a paused or cut-off node would): etcd
    // expires it and deletes a's owner key.
    drop(a);
    let vanished = next_change(&mut watch, Duration::from_secs(10), "a's ownership ending").await;
    assert_eq!(vanished, OwnerChanged { group: "g".into(), owner: None, token: token_a });
    let token_b = own_b.acquire("g").await.expect("acquire").expect("g is free again");
    assert!(token_b > token_a);

    match own_a.guarded_put("g", token_a, "state", "stale").await {
        Err(Error::StaleFencingToken { group, token, current }) => {
            assert_eq!((group.as_str(), token), ("g", token_a));
            assert!(current.contains("owned by b"), "{current}");
        }
        other => panic!("a stale write must fail, got {other:?}"),
    }
    own_b.guarded_put("g", token_b, "state", "from b").await.expect("the new owner writes");
}

#[tokio::test]
async fn the_owners_watch_starts_with_current_owners_and_sees_one_vanish_with_its_nodes_lease() {
    let etcd = EtcdCluster::start().await;
    let a = join(etcd.node_config("watch", "a", Duration::from_secs(1))).await.expect("join a");
    let b = join(etcd.node_config("watch", "b", Duration::from_secs(1))).await.expect("join b");
    let token_early = a.ownership().acquire("early").await.expect("acquire").expect("free");
    let mut watch = b.ownership().watch_owners().await.expect("watch");
    assert_eq!(
        next_change(&mut watch, Duration::from_secs(5), "the existing owner").await,
        OwnerChanged { group: "early".into(), owner: Some("a".into()), token: token_early }
    );
    let token_late = a.ownership().acquire("late").await.expect("acquire").expect("free");
    assert_eq!(
        next_change(&mut watch, Duration::from_secs(5), "the new owner").await,
        OwnerChanged { group: "late".into(), owner: Some("a".into()), token: token_late }
    );

    drop(a);
    let mut ended = vec![
        next_change(&mut watch, Duration::from_secs(10), "an ownership ending").await,
        next_change(&mut watch, Duration::from_secs(5), "the other ownership ending").await,
    ];
    ended.sort_by(|left, right| left.group.cmp(&right.group));
    assert_eq!(
        ended,
        [
            OwnerChanged { group: "early".into(), owner: None, token: token_early },
            OwnerChanged { group: "late".into(), owner: None, token: token_late },
        ]
    );
    assert!(b.ownership().list_owners().await.expect("owners").is_empty());
}
