//! Password hashing with argon2id.
//!
//! Parameters: argon2 crate defaults, which are OWASP's recommendation:
//! argon2id v0x13, m = 19456 KiB, t = 2, p = 1. Stored as PHC strings, so
//! hashes made with other parameters keep verifying after a change.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password warden accepts anywhere (config, command line).
pub const MIN_LENGTH: usize = 12;
/// Longest password, in characters.
const MAX_LENGTH: usize = 1024;

pub fn check_policy(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(format!("must be at least {MIN_LENGTH} characters long"));
    }
    if length > MAX_LENGTH {
        return Err(format!("must be at most {MAX_LENGTH} characters long"));
    }
    Ok(())
}

/// argon2id PHC string of `password` with a fresh salt. CPU-heavy: call
/// from a blocking thread in async code.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail on a bounded password")
        .to_string()
}

/// Whether `password` matches `phc`; a malformed hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.chars().count() > MAX_LENGTH {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Spends the same time as a real verification, for logins of unknown
/// accounts, so response times do not reveal which accounts exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("warden-timing-equaliser"));
    let _ = verify(password, dummy);
}

/// At most this many argon2 runs at once in this process (each takes
/// ~19 MiB and tens of milliseconds of one core): a flood of logins queues
/// here instead of exhausting memory and starving every other request.
fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores.max(2))
    })
}

/// How many argon2 runs may start now (for tests and diagnostics).
pub fn free_argon2_slots() -> usize {
    argon2_slots().available_permits()
}

/// Runs `work` (an argon2 hash or check) on a blocking thread once one of
/// the capped argon2 slots is free.
async fn in_argon2_slot<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let _slot = argon2_slots()
        .acquire()
        .await
        .expect("the argon2 semaphore is never closed");
    tokio::task::spawn_blocking(work).await.expect("argon2 does not panic")
}

/// [`verify`] off the async workers, within the argon2 cap; `None` (no
/// such account) spends the same time and never matches.
pub async fn verify_capped(password: String, phc: Option<String>) -> bool {
    in_argon2_slot(move || match phc {
        Some(phc) => verify(&password, &phc),
        None => {
            verify_nothing(&password);
            false
        }
    })
    .await
}

/// [`hash`] off the async workers, within the argon2 cap.
pub async fn hash_capped(password: String) -> String {
    in_argon2_slot(move || hash(&password)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash("correct horse battery");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn policy() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("twelve chars").is_ok());
        assert!(check_policy(&"x".repeat(2000)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn argon2_runs_are_capped() {
        let cap = free_argon2_slots();
        let checks: Vec<_> = (0..cap * 3)
            .map(|_| tokio::spawn(verify_capped("guess guess guess".into(), None)))
            .collect();
        let mut lowest = cap;
        while !checks.iter().all(|c| c.is_finished()) {
            lowest = lowest.min(free_argon2_slots());
            tokio::task::yield_now().await;
        }
        for check in checks {
            assert!(!check.await.unwrap());
        }
        // Every slot was taken at some point, none was ever over-taken,
        // and all are free again.
        assert_eq!(lowest, 0);
        assert_eq!(free_argon2_slots(), cap);
    }
}
