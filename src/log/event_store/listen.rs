//! Telling instances about appends: this process's appends are announced
//! with `NOTIFY` (rate-limited, outside the append's transaction), and
//! other instances' announcements, heard with `LISTEN`, wake this one's
//! followers.

use deadpool_postgres::GenericClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::platform::db;

use super::*;

/// Channel on which instances tell each other about appends.
pub const APPEND_CHANNEL: &str = "warden_events";
/// Channel a leading projector notifies after moving its checkpoint, so
/// that commands waiting on other instances wake at once.
pub const CHECKPOINT_CHANNEL: &str = "warden_checkpoints";
/// Shortest pause between two notifications from one instance.
const NOTIFY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

impl EventStore {
    /// Tells other instances about this process's appends with `NOTIFY`,
    /// at most once per [`NOTIFY_INTERVAL`]. Not done inside the append:
    /// PostgreSQL serialises the commits of notifying transactions, which
    /// would cost group commit (measured: half the append rate).
    pub fn spawn_append_notifier(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        let mut appends = self.appended_here.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = appends.changed() => if changed.is_err() { return },
                }
                match store.db.get().await {
                    Ok(connection) => {
                        if let Err(error) = connection.batch_execute(&format!("NOTIFY {APPEND_CHANNEL}")).await {
                            tracing::warn!(%error, "could not notify other instances of appends");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not notify other instances of appends"),
                }
                tokio::time::sleep(NOTIFY_INTERVAL).await;
            }
        })
    }

    /// Forwards other instances' append notifications to
    /// [`Self::subscribe_appends`] until `cancel` fires.
    pub fn spawn_append_listener(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    outcome = store.listen_for_appends() => if let Err(error) = outcome {
                        tracing::warn!(%error, "lost the append notification channel; retrying");
                    },
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        })
    }

    async fn listen_for_appends(&self) -> Result<(), tokio_postgres::Error> {
        use futures_util::StreamExt;
        let channels = [APPEND_CHANNEL, CHECKPOINT_CHANNEL];
        let Some(db::Listener { client, mut messages }) = self.db.listen(&channels).await? else {
            return Ok(());
        };
        // A question now and then, so that a server that stopped answering
        // fails this connection (and it is made again, to whichever host
        // serves then) instead of leaving it waiting for notifications.
        let mut keepalive = tokio::time::interval(db::LISTENER_KEEPALIVE);
        let mut asking = None;
        loop {
            tokio::select! {
                _ = keepalive.tick(), if asking.is_none() => asking = Some(Box::pin(client.simple_query(""))),
                answer = async { asking.as_mut().expect("asked").await }, if asking.is_some() => {
                    asking = None;
                    answer?;
                }
                message = messages.next() => match message {
                    Some(message) => {
                        if let tokio_postgres::AsyncMessage::Notification(notification) = message? {
                            if notification.channel() == CHECKPOINT_CHANNEL {
                                self.checkpoints_elsewhere
                                    .send_modify(|count| *count = count.wrapping_add(1));
                            } else {
                                self.signal_remote_append();
                            }
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
}
