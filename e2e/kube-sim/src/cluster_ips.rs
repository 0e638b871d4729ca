//! ClusterIPs on the loopback range, a block per kube-sim.
//!
//! A Service's ClusterIP is where its proxy listens, on the Service's own ports (as kube-proxy
//! makes `<clusterIP>:<port>` reach the endpoints), and what its names resolve to in the pods'
//! hosts files ([`crate::controllers::dns`]). Linux routes all of 127.0.0.0/8 to the loopback
//! interface, so every address of it can be bound without configuration. Several kube-sims run on
//! one machine at once (each test process starts its own): each claims a /16 block
//! `127.B.0.0/16` (B from 1 to 254; 127.0.0.0/16 holds 127.0.0.1, which everything else uses) by
//! an exclusive lock on a file in the temporary directory, held while the kube-sim lives, so two
//! never hand out the same address.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A claimed block of ClusterIPs, `127.B.0.0/16`.
#[derive(Debug)]
pub(crate) struct IpBlock {
    second_octet: u8,
    /// Holds the lock; released when dropped (or when the process exits).
    _lock: Option<File>,
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("kube-sim-cluster-ips")
}

impl IpBlock {
    /// Claims the first free block. If none can be locked (no temporary directory, every block
    /// taken), a block derived from the process id is used unlocked, with a warning.
    pub(crate) fn claim() -> Self {
        let dir = lock_dir();
        if std::fs::create_dir_all(&dir).is_ok() {
            let start = std::process::id() % 254;
            for offset in 0..254u32 {
                let octet = u8::try_from((start + offset) % 254 + 1).unwrap_or(1);
                let Ok(file) = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(format!("127.{octet}.lock")))
                else {
                    continue;
                };
                if file.try_lock().is_ok() {
                    return IpBlock {
                        second_octet: octet,
                        _lock: Some(file),
                    };
                }
            }
        }
        let octet = u8::try_from(std::process::id() % 254 + 1).unwrap_or(1);
        tracing::warn!(
            block = %format!("127.{octet}.0.0/16"),
            "could not lock a ClusterIP block in {}: using one unlocked",
            dir.display()
        );
        IpBlock {
            second_octet: octet,
            _lock: None,
        }
    }

    /// The `n`-th address of the block (n from 1; 127.B.0.0 and 127.B.255.255 are never used).
    pub(crate) fn address(&self, n: u32) -> Ipv4Addr {
        let n = n % 65_534 + 1;
        Ipv4Addr::new(
            127,
            self.second_octet,
            u8::try_from(n >> 8).unwrap_or(0),
            u8::try_from(n & 0xff).unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_live_kube_sims_never_share_a_block() {
        let first = IpBlock::claim();
        let second = IpBlock::claim();
        assert_ne!(first.second_octet, second.second_octet);
        assert_ne!(first.second_octet, 0);
        assert_eq!(first.address(1).octets()[..2], [127, first.second_octet]);
        assert!(first.address(1).is_loopback());
    }
}
