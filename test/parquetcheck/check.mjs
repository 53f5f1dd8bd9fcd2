// check.mjs reads clickagg's Parquet files with DuckDB, a reader that shares
// no code with the one that wrote them (parquet-go), and prints what it
// found as JSON on stdout, for the Go end-to-end tests to compare with their
// ground truth (test/parquetcheck_test.go).
//
//	node check.mjs raw DIR   the raw archive under DIR (DIR/raw/...)
//	node check.mjs sql DIR   runs the SQL read from stdin with DIR as the
//	                         working directory, as a user would with the
//	                         DuckDB CLI; prints the last statement's rows
//
// Files are found with DuckDB's own glob and Hive partitioning, so the
// paths are checked too, not only the bytes.
import { DuckDBInstance, DuckDBTimestampTZValue } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';

// Print TIMESTAMP WITH TIME ZONE values in UTC, not in the time zone of
// this process (which the package uses by default), so the output says
// which instant DuckDB computed whatever TZ the caller has.
DuckDBTimestampTZValue.timezoneOffsetInMinutes = 0;

// json turns DuckDB values into plain JSON: BIGINTs as numbers while they
// are exact, timestamps and other values as DuckDB prints them.
function json(v) {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
    return v;
  }
  if (typeof v === 'bigint') {
    return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  }
  return String(v);
}

async function rows(conn, sql) {
  const reader = await conn.runAndReadAll(sql);
  return reader.getRows().map((r) => r.map(json));
}

// raw counts the archive the way README's query does: a click is an
// (ad_id, event_id) pair, counted once per minute of its click_time.
async function raw(conn) {
  // Whole-minute truncation is the same in every time zone DuckDB knows
  // but a few historical ones; UTC makes it exact.
  await conn.run("SET TimeZone = 'UTC'");
  await conn.run(`CREATE VIEW raw AS
    SELECT * FROM read_parquet('raw/**/*.parquet', hive_partitioning = true)`);
  const perAdMinute = await rows(conn, `
    SELECT ad_id, epoch_ms(minute) // 60000 AS minute, count(*) AS clicks
    FROM (SELECT DISTINCT ad_id, event_id, date_trunc('minute', click_time) AS minute FROM raw)
    GROUP BY ALL ORDER BY ALL`);
  const perPartition = await rows(conn, `
    SELECT CAST(partition AS INTEGER), count(*) FROM raw GROUP BY ALL ORDER BY ALL`);
  const [[total, files, misplaced, doubled, clickTimeType]] = await rows(conn, `
    SELECT count(*),
      (SELECT count(*) FROM glob('raw/**/*.parquet')),
      count(*) FILTER (WHERE CAST(partition AS INTEGER) <> log_partition),
      count(*) - count(DISTINCT (log_partition, log_offset, entry_index)),
      (SELECT typeof(click_time) FROM raw LIMIT 1)
    FROM raw`);
  return {
    files,
    rows: total,
    // rows whose log_partition differs from the partition of their path
    misplaced,
    // rows beyond the first at the same (partition, offset, index)
    doubled,
    click_time_type: clickTimeType,
    partitions: Object.fromEntries(perPartition),
    counts: perAdMinute.map(([ad, minute, clicks]) => ({ ad, minute, clicks })),
  };
}

async function main() {
  const [cmd, dir] = process.argv.slice(2);
  if (!['raw', 'sql'].includes(cmd) || !dir) {
    process.stderr.write('usage: node check.mjs raw|sql DIR\n');
    process.exit(2);
  }
  process.chdir(dir);
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  let out;
  if (cmd === 'raw') {
    out = await raw(conn);
  } else {
    const reader = await conn.runAndReadAll(readFileSync(0, 'utf8'));
    out = { columns: reader.columnNames(), rows: reader.getRows().map((r) => r.map(json)) };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`check.mjs: ${err.stack ?? err}\n`);
  process.exit(1);
});
