//! Running one query on either backend, and the clock the data side stores.
//!
//! The data side writes SQL that both SQLite and Postgres accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT DO NOTHING`, times as integer milliseconds), so a query is written once and
//! [`on_pool!`] runs it on whichever pool the tier chose. Where the SQL must differ (the queue
//! claim's `FOR UPDATE SKIP LOCKED`), the caller matches on [`crate::db::Pool`] itself.

/// Runs `$body` with `$executor` bound to the inner sqlx pool of `$pool`.
///
/// The body is compiled once per backend, so it must produce the same type on both (decode rows
/// into tuples or plain values, and map query results to `rows_affected()`).
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$executor:ident| $body:expr) => {
        match $pool {
            $crate::db::Pool::Postgres($executor) => $body,
            $crate::db::Pool::Sqlite($executor) => $body,
        }
    };
}
pub use crate::on_pool;

/// Milliseconds since the Unix epoch, as the data side stores times.
pub fn epoch_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ms_is_after_2024_and_advances() {
        let first = epoch_ms();
        assert!(first > 1_704_067_200_000, "{first}");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(epoch_ms() > first);
    }
}
