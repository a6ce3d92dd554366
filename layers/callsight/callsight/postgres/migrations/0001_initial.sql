-- Callsight BI schema: one clinic's calls, transcripts, analyses and reports, upserted by callsight.postgres.sync.
-- Data tables hold only what DynamoDB/S3 hold (no sync timestamps), so a re-sync of unchanged data writes nothing;
-- each sync is recorded in sync_runs instead.
-- A call's child rows (transcript_lines, analyses, criterion_scores, recommendations) join it on
-- (client_id, call_id), their primary key's prefix. They carry no foreign key: only the sync writes them, each
-- batch with its calls in one transaction, and a per-row foreign-key check cost ~30 % of a sync's time.

CREATE TABLE clinics (
    client_id        text PRIMARY KEY,
    name             text,
    timezone         text,
    amocrm_subdomain text
);

CREATE TABLE calls (
    client_id         text NOT NULL REFERENCES clinics (client_id),
    call_id           text NOT NULL,
    call_time         timestamptz,
    local_day         date,
    direction         text,
    duration_s        integer,
    administrator     text,
    responsible_user_id bigint,
    phone_hash        text,   -- sha256 hex of client_id || ':' || the phone's digits; never the phone itself
    amo_call_status   integer,
    call_result       text,
    entity_type       text,
    entity_id         bigint,
    amo_note_id       bigint,
    recording_status  text NOT NULL
        CHECK (recording_status IN ('downloaded', 'no_recording', 'too_short', 'failed', 'pending')),
    recording_error   text,
    transcribe_status text,
    transcribe_error  text,
    analyze_status    text,
    analyze_error     text,
    PRIMARY KEY (client_id, call_id)
);
CREATE INDEX calls_client_time ON calls (client_id, call_time);
CREATE INDEX calls_client_administrator ON calls (client_id, administrator);
CREATE INDEX calls_client_day ON calls (client_id, local_day);

CREATE TABLE transcript_lines (
    client_id text    NOT NULL,
    call_id   text    NOT NULL,
    line_no   integer NOT NULL,   -- 1-based position in the transcript's "lines"
    speaker   text,
    start_s   real,
    end_s     real,
    text      text,
    PRIMARY KEY (client_id, call_id, line_no)
);

CREATE TABLE analyses (
    client_id         text NOT NULL,
    call_id           text NOT NULL,
    call_type         text,
    booked            boolean,
    booking_reason    text,
    overall_score     integer,
    patient_sentiment text,
    summary           text,
    model             text,
    analyzed_at       timestamptz,
    PRIMARY KEY (client_id, call_id)
);

CREATE TABLE criterion_scores (
    client_id text NOT NULL,
    call_id   text NOT NULL,
    criterion text NOT NULL,
    score     integer,
    evidence  text,
    PRIMARY KEY (client_id, call_id, criterion)
);

CREATE TABLE recommendations (
    client_id text    NOT NULL,
    call_id   text    NOT NULL,
    position  integer NOT NULL,   -- 1-based position in the analysis' "recommendations"
    text      text,
    PRIMARY KEY (client_id, call_id, position)
);

CREATE TABLE reports (
    client_id      text NOT NULL REFERENCES clinics (client_id),
    start_date     date NOT NULL,
    end_date       date NOT NULL,
    generated_at   timestamptz,
    total_calls    integer,
    analysed_calls integer,
    report         jsonb,
    markdown       text,
    PRIMARY KEY (client_id, start_date, end_date)
);

CREATE TABLE report_problems (
    client_id  text    NOT NULL,
    start_date date    NOT NULL,
    end_date   date    NOT NULL,
    rank       integer NOT NULL,
    title      text,
    calls      integer,
    share      real,
    PRIMARY KEY (client_id, start_date, end_date, rank),
    FOREIGN KEY (client_id, start_date, end_date) REFERENCES reports (client_id, start_date, end_date)
        ON DELETE CASCADE
);

CREATE TABLE sync_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id      text NOT NULL REFERENCES clinics (client_id),
    start_date     date NOT NULL,
    end_date       date NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    batches        integer,
    rows_written   jsonb,   -- per table: rows inserted or updated
    rows_unchanged jsonb,
    rows_deleted   jsonb,
    skipped_items  jsonb,
    error          text
);
CREATE INDEX sync_runs_client_started ON sync_runs (client_id, started_at);

-- BI views ---------------------------------------------------------------------------------------------------------

-- per clinic, administrator and ISO week (week_start is that week's Monday)
CREATE VIEW v_admin_weekly AS
SELECT c.client_id,
       c.administrator,
       date_trunc('week', c.local_day::timestamp)::date                        AS week_start,
       extract(isoyear FROM c.local_day)::integer                              AS iso_year,
       extract(week FROM c.local_day)::integer                                 AS iso_week,
       count(*)                                                                AS calls,
       count(a.call_id)                                                        AS analysed_calls,
       avg(CASE WHEN a.booked THEN 1.0 WHEN NOT a.booked THEN 0.0 END)         AS booked_share,
       avg(a.overall_score)                                                    AS average_score
FROM calls c
LEFT JOIN analyses a ON a.client_id = c.client_id AND a.call_id = c.call_id
WHERE c.local_day IS NOT NULL
GROUP BY 1, 2, 3, 4, 5;

-- per clinic and call type (analysed calls only)
CREATE VIEW v_call_types AS
SELECT a.client_id,
       a.call_type,
       count(*)                                                                AS calls,
       avg(CASE WHEN a.booked THEN 1.0 WHEN NOT a.booked THEN 0.0 END)         AS booked_share,
       avg(a.overall_score)                                                    AS average_score
FROM analyses a
GROUP BY a.client_id, a.call_type;

-- per clinic and local day: analysed calls, how many booked, and the conversion (booked / analysed)
CREATE VIEW v_booking_conversion_daily AS
SELECT c.client_id,
       c.local_day,
       count(*)                                                                AS analysed_calls,
       count(*) FILTER (WHERE a.booked)                                        AS booked,
       (count(*) FILTER (WHERE a.booked))::numeric / count(*)                  AS conversion
FROM analyses a
JOIN calls c ON c.client_id = a.client_id AND c.call_id = a.call_id
WHERE c.local_day IS NOT NULL
GROUP BY c.client_id, c.local_day;
