-- The append's version guard raises instead of inserting nothing: a
-- refused append then aborts its transaction, so a COMMIT sent right
-- behind it (in the same round trip) can only roll it back.
CREATE FUNCTION warden_refuse_append(stream text, expected bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'stream % is not at version %', stream, expected
        USING ERRCODE = 'WA409';
END
$$;
