-- eventcore schema 7: the keys of personal-data subjects (eventcore.shredding).
--
-- One row per subject: its AES-256 key, or, once forgotten, no key and the time it was
-- forgotten. The row stays so that a forgotten subject is never mistaken for one whose
-- key is missing (an incomplete table), and never gets a new key.
--
-- The application role (see the README's GRANTs) may read the table and insert keys;
-- it cannot update or delete a row: forgetting goes through forget_subject(), which
-- only ever destroys a key. A backup of this table keeps keys that were forgotten
-- after it was taken: expire such backups (see docs/guides/personal-data.md).

CREATE TABLE __SCHEMA__.subject_keys (
    subject      text        PRIMARY KEY,
    key          bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CONSTRAINT subject_keys_key_xor_forgotten CHECK ((key IS NULL) = (forgotten_at IS NOT NULL)),
    CONSTRAINT subject_keys_key_length CHECK (key IS NULL OR octet_length(key) = 32)
);

REVOKE ALL ON __SCHEMA__.subject_keys FROM PUBLIC;

-- Destroy a subject's key (a forgotten row is inserted if it had none); true if a key
-- was destroyed. Runs with its owner's rights, so the application role needs no UPDATE.
CREATE FUNCTION __SCHEMA__.forget_subject(p_subject text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOOP  -- each statement sees the rows committed before it (READ COMMITTED)
        UPDATE __SCHEMA__.subject_keys SET key = NULL, forgotten_at = now()
        WHERE subject = p_subject AND key IS NOT NULL;
        IF FOUND THEN
            RETURN true;
        END IF;
        INSERT INTO __SCHEMA__.subject_keys (subject, key, forgotten_at)
        VALUES (p_subject, NULL, now()) ON CONFLICT (subject) DO NOTHING;
        IF FOUND THEN
            RETURN false;
        END IF;
        PERFORM FROM __SCHEMA__.subject_keys WHERE subject = p_subject AND key IS NULL;
        IF FOUND THEN
            RETURN false;  -- forgotten before
        END IF;
        -- else a key was inserted meanwhile: destroy it on the next round
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION __SCHEMA__.forget_subject(text) FROM PUBLIC;
