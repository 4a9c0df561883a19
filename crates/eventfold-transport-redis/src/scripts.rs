//! The Lua scripts: each runs atomically on the server, so a step that touches several keys (a
//! pending entry and the retry set, a pending entry and the dead letters) cannot be seen half
//! done, and two subscribers cannot both take one due retry. Sent with `EVAL` every time (they
//! are short), so a restarted Redis that lost its script cache needs nothing.
//!
//! Time is the server's (`TIME`), so clients with skewed clocks agree on when a retry is due.

/// Takes what this subscriber should deliver now, besides new entries:
/// 1. scheduled retries that are due (`ZREM` first, so exactly one subscriber takes each), claimed
///    with `XCLAIM` (which counts a delivery);
/// 2. when `ARGV[4]` (min idle ms) is not 0, entries idle that long (a crashed or closed
///    consumer's): `XAUTOCLAIM ... JUSTID` (which does not count), then, for those not scheduled
///    for a retry, `XCLAIM` (which counts).
///
/// KEYS: topic stream, replay stream, retry set. ARGV: group, consumer, max entries, min idle ms,
/// XAUTOCLAIM cursor on the topic stream, on the replay stream.
/// Returns `{entries, ms until the next scheduled retry or -1, cursor, cursor}`, each entry
/// `{tag, id, delivery count, fields}`.
pub(crate) const POLL: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local group, consumer, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local streams = {m = KEYS[1], r = KEYS[2]}
local out = {}
local function claim(tag, id)
  local key = streams[tag]
  if not key then return end
  local e = redis.call('XCLAIM', key, group, consumer, 0, id)
  if e[1] then
    local p = redis.call('XPENDING', key, group, id, id, 1)
    local count = 1
    if p[1] then count = p[1][4] end
    table.insert(out, {tag, id, count, e[1][2]})
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, n)
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[3], member)
  claim(string.sub(member, 1, 1), string.sub(member, 3))
end
local cursors = {ARGV[5], ARGV[6]}
local min_idle = tonumber(ARGV[4])
if min_idle > 0 then
  for i, tag in ipairs({'m', 'r'}) do
    if #out < n then
      local r = redis.call('XAUTOCLAIM', streams[tag], group, consumer, min_idle, cursors[i],
        'COUNT', n - #out, 'JUSTID')
      cursors[i] = r[1]
      for _, id in ipairs(r[2]) do
        if not redis.call('ZSCORE', KEYS[3], tag .. ':' .. id) then
          claim(tag, id)
        end
      end
    end
  end
end
local wait = -1
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {out, wait, cursors[1], cursors[2]}
"#;

/// Schedules a pending entry's redelivery: adds it to the group's retry set, due in `ARGV[4]`
/// ms. An entry no longer pending (acked meanwhile) is left alone.
///
/// KEYS: the entry's stream, retry set. ARGV: group, member (`{tag}:{id}`), id, delay ms.
/// Returns 1 if scheduled, 0 if the entry was not pending.
pub(crate) const RETRY: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[2])
return 1
"#;

/// Dead-letters a pending entry: copies its fields to the group's dead-letter stream with the
/// reason, its delivery count and where it came from, and acks it, as one step. An entry no
/// longer pending (acked or dead-lettered already) is left alone.
///
/// KEYS: the entry's stream, dead-letter stream, retry set. ARGV: group, id, reason, 1 to also
/// delete the entry (a replay-stream entry, which no other group reads), member in the retry set.
/// Returns 1 if dead-lettered, 0 if the entry was not pending.
pub(crate) const DEAD_LETTER: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not p[1] then return 0 end
local attempts = p[1][4]
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local fields = {}
if e[1] then fields = e[1][2] end
table.insert(fields, 'dead_reason')
table.insert(fields, ARGV[3])
table.insert(fields, 'dead_attempts')
table.insert(fields, tostring(attempts))
table.insert(fields, 'dead_from')
table.insert(fields, KEYS[1] .. ' ' .. ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[5])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
"#;

/// Moves up to `ARGV[1]` of the oldest dead letters to the group's replay stream (without the
/// dead-letter fields) and deletes them from the dead letters, as one step.
///
/// KEYS: dead-letter stream, replay stream. Returns how many moved.
pub(crate) const REPLAY: &str = r#"
local es = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
for _, e in ipairs(es) do
  local f = {}
  local fs = e[2]
  for i = 1, #fs, 2 do
    local name = fs[i]
    if name ~= 'dead_reason' and name ~= 'dead_attempts' and name ~= 'dead_from' then
      table.insert(f, name)
      table.insert(f, fs[i + 1])
    end
  end
  if #f == 0 then f = {'data', ''} end
  redis.call('XADD', KEYS[2], '*', unpack(f))
  redis.call('XDEL', KEYS[1], e[1])
end
return #es
"#;

/// Gives a closing subscriber's pending entries back: claims them (without counting a delivery)
/// for the placeholder consumer `eventfold-released` with an idle time longer than any ack
/// timeout, so the next `XAUTOCLAIM` of any live subscriber takes them at once; then deletes
/// the consumer, which owns nothing any more.
///
/// KEYS: topic stream, replay stream. ARGV: group, consumer, idle ms. Returns how many.
pub(crate) const RELEASE: &str = r#"
local n = 0
for i = 1, 2 do
  while true do
    local p = redis.call('XPENDING', KEYS[i], ARGV[1], '-', '+', 1000, ARGV[2])
    if #p == 0 then break end
    local args = {KEYS[i], ARGV[1], 'eventfold-released', 0}
    for _, e in ipairs(p) do table.insert(args, e[1]) end
    table.insert(args, 'IDLE')
    table.insert(args, ARGV[3])
    table.insert(args, 'JUSTID')
    redis.call('XCLAIM', unpack(args))
    n = n + #p
  end
  redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], ARGV[2])
end
return n
"#;

/// An `EVAL` of `script`.
pub(crate) fn eval(script: &str, keys: &[&str], args: &[&[u8]]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    for a in args {
        cmd.arg(*a);
    }
    cmd
}
