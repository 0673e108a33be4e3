//! The process's file-descriptor limit: `rpcgate serve` sizes it for `max_connections`,
//! `rpcgate bench` for the connections it opens.

use rlimit::Resource;

/// Descriptors kept for everything that is not a connection.
const SPARE_FDS: u64 = 256;

/// Raises RLIMIT_NOFILE to hold `sockets` connections: the soft limit, and the hard one too
/// when privileged. Returns the soft limit in force and, if it is still short, why.
pub fn raise(sockets: u64) -> (u64, Option<String>) {
    let wanted = sockets.saturating_add(SPARE_FDS);
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return (0, Some("cannot read the file descriptor limit".into()));
    };
    if soft >= wanted {
        return (soft, None);
    }
    let ceiling = read_number("/proc/sys/fs/nr_open").unwrap_or(hard);
    let target = wanted.min(ceiling.max(hard));
    if rlimit::setrlimit(Resource::NOFILE, target, hard.max(target)).is_err() {
        let _ = rlimit::setrlimit(Resource::NOFILE, hard, hard);
    }
    let now = rlimit::getrlimit(Resource::NOFILE).map_or(soft, |(s, _)| s);
    let short = (now < wanted).then(|| {
        format!(
            "{sockets} sockets need about {wanted} file descriptors but the limit is {now} \
             (raise the hard limit: ulimit -Hn, or run as root)"
        )
    });
    (now, short)
}

/// A number read from a /proc file.
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
