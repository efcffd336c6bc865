//! Connections outside the pool that LISTEN for notifications.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::connect::PgConnection;

/// How often a listening connection should be asked something (any
/// statement, e.g. `client.simple_query("")`): a connection that only
/// waits for notifications owes no answer, so a frozen server would go
/// unnoticed; a question gives the answer deadline something to time.
pub const LISTENER_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection outside the pool listening on some channels: its client
/// (keep it: dropping it closes the connection; it may send statements)
/// and its messages, notifications among them.
pub struct Listener {
    pub client: tokio_postgres::Client,
    pub messages: BoxStream<'static, Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>,
}

/// Runs `LISTEN` on each of `channels` over a new connection, driving the
/// connection meanwhile; `None` if the server closed it first. Every
/// notification committed after this returns is delivered.
pub(super) async fn listen(
    client: tokio_postgres::Client,
    mut connection: PgConnection,
    channels: &[&str],
) -> Result<Option<Listener>, tokio_postgres::Error> {
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
    let statement: String = channels.iter().map(|channel| format!("LISTEN {channel};")).collect();
    {
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        // The connection must be driven while LISTEN runs.
        loop {
            tokio::select! {
                result = &mut listen => { result?; break; }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(None),
                },
            }
        }
    }
    Ok(Some(Listener { client, messages }))
}
