-- The heartbeat cache (src/fleet/heartbeat_cache.rs): every change that
-- could make a cached heartbeat answer wrong notifies every instance
-- inside its own transaction, so the notification is delivered in commit
-- order, before any ping committed after it. Only rare changes notify
-- (PostgreSQL serialises the commits of notifying transactions): a
-- runner's token, status, pause, tags or priority; a session's end; a job
-- claimed by a machine.
CREATE FUNCTION warden_heartbeat_cache_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'runners' THEN
        PERFORM pg_notify('warden_heartbeat_cache', 'r:' || OLD.id::text);
    ELSIF TG_TABLE_NAME = 'runner_sessions' THEN
        PERFORM pg_notify('warden_heartbeat_cache', 's:' || OLD.id::text);
    ELSE
        PERFORM pg_notify('warden_heartbeat_cache', 'm:' || NEW.value);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runners_heartbeat_cache
    AFTER UPDATE ON runners FOR EACH ROW
    WHEN (OLD.token_hash IS DISTINCT FROM NEW.token_hash
          OR OLD.previous_token_hash IS DISTINCT FROM NEW.previous_token_hash
          OR OLD.previous_token_valid_until IS DISTINCT FROM NEW.previous_token_valid_until
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.paused IS DISTINCT FROM NEW.paused
          OR OLD.tags IS DISTINCT FROM NEW.tags
          OR OLD.priority IS DISTINCT FROM NEW.priority
          OR OLD.number IS DISTINCT FROM NEW.number)
    EXECUTE FUNCTION warden_heartbeat_cache_notify();
CREATE TRIGGER runners_deleted_heartbeat_cache
    AFTER DELETE ON runners FOR EACH ROW
    EXECUTE FUNCTION warden_heartbeat_cache_notify();

CREATE TRIGGER runner_sessions_heartbeat_cache
    AFTER UPDATE ON runner_sessions FOR EACH ROW
    WHEN (OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL)
    EXECUTE FUNCTION warden_heartbeat_cache_notify();
CREATE TRIGGER runner_sessions_deleted_heartbeat_cache
    AFTER DELETE ON runner_sessions FOR EACH ROW
    EXECUTE FUNCTION warden_heartbeat_cache_notify();

-- A machine's job claim appearing or changing hands; its release needs no
-- notice (only machines without a job are cached).
CREATE TRIGGER machine_job_claims_heartbeat_cache
    AFTER INSERT OR UPDATE ON unique_claims FOR EACH ROW
    WHEN (NEW.scope = 'machine_job')
    EXECUTE FUNCTION warden_heartbeat_cache_notify();
