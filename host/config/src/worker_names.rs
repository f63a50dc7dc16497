//! The names of monitor workers. A resource that asks for a worker of its
//! own gets one named after it, so the node file must not name a resource
//! like a shared worker; the rule lives here, beside the names it guards.

/// The name of the worker resources share unless they ask for their own;
/// once it is full the next are `shared-2`, `shared-3`, and so on.
pub const SHARED_WORKER: &str = "shared";

/// Whether `name` is, or could become, a shared worker's name: a resource
/// with a worker of its own (named after it) must not take one.
pub fn is_shared_worker_name(name: &str) -> bool {
    name == SHARED_WORKER
        || name
            .strip_prefix(SHARED_WORKER)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of the `index`th shared worker: `shared`, then `shared-2`, ...
pub fn shared_worker_name(index: usize) -> String {
    match index {
        0 => SHARED_WORKER.to_string(),
        _ => format!("{SHARED_WORKER}-{}", index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shard_names_are_reserved() {
        for index in 0..3 {
            assert!(is_shared_worker_name(&shared_worker_name(index)));
        }
        for free in ["shared-", "shared-x", "shared2", "sharedstore", "web-shared-2", "notepad"] {
            assert!(!is_shared_worker_name(free), "{free}");
        }
    }
}
