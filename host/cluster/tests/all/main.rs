//! The cluster crate's one integration test binary: real etcd clusters
//! (`steward_cluster::harness`) for membership and ownership, and the ownership simulation,
//! which needs no etcd.

mod membership;
mod ownership;
mod simulation;
