//! The Lua scripts that make each update atomic on the Redis server.

/// Publishes a breaker's state: `KEYS` = epoch, states, votes, channel; `ARGV` = circuit,
/// state, open-until ms (0: none), replica, now ms, quorum (0: none). With a quorum, an OPEN
/// is a vote kept until its open-until, published once `quorum` votes are open; any other
/// state withdraws the replica's vote. The epoch is one more than the last, and never less
/// than the replica's clock in µs, so that epochs keep growing after the server loses its
/// data. Answers the epoch, or 0 for a vote short of the quorum.
pub(crate) const PUBLISH: &str = r#"
local circuit, state, until_ms, replica = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, quorum = tonumber(ARGV[5]), tonumber(ARGV[6])
if state == 'OPEN' and quorum > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZADD', KEYS[3], until_ms, replica)
  -- The votes last as long as the latest of them.
  local latest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2]
  redis.call('PEXPIREAT', KEYS[3], tonumber(latest) + 1000)
  if redis.call('ZCARD', KEYS[3]) < quorum then
    return 0
  end
elseif state ~= 'OPEN' then
  redis.call('ZREM', KEYS[3], replica)
end
local epoch = redis.call('INCR', KEYS[1])
local floor = now * 1000
if epoch < floor then
  redis.call('SET', KEYS[1], string.format('%.0f', floor))
  epoch = floor
end
local record = string.format('%.0f', epoch) .. '|' .. state .. '|' .. until_ms .. '|' .. replica
redis.call('HSET', KEYS[2], circuit, record)
redis.call('PUBLISH', KEYS[4], record .. '|' .. circuit)
return epoch
"#;

/// Adds outcome counts to per-second buckets and sums the window: `KEYS` = one window hash
/// per circuit; `ARGV` = now ms, window ms, then per circuit calls, failures, slow, since ms.
/// Buckets older than the window are deleted; each circuit's sum covers the buckets within
/// the window after the second of its `since`. Answers `{calls, failures, slow}` per circuit.
pub(crate) const WINDOW: &str = r#"
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local sec = string.format('%d', math.floor(now / 1000))
local oldest = math.floor((now - window) / 1000) + 1
local out = {}
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local since = tonumber(ARGV[at + 4])
  local from = oldest
  if since > 0 then
    from = math.max(oldest, math.floor(since / 1000) + 1)
  end
  redis.call('HINCRBY', key, sec .. ':c', ARGV[at + 1])
  if ARGV[at + 2] ~= '0' then redis.call('HINCRBY', key, sec .. ':f', ARGV[at + 2]) end
  if ARGV[at + 3] ~= '0' then redis.call('HINCRBY', key, sec .. ':s', ARGV[at + 3]) end
  redis.call('PEXPIRE', key, window + 2000)
  local all = redis.call('HGETALL', key)
  local calls, failures, slow = 0, 0, 0
  for j = 1, #all, 2 do
    local field = all[j]
    local bucket = tonumber(string.sub(field, 1, -3))
    local kind = string.sub(field, -1)
    if bucket < oldest then
      redis.call('HDEL', key, field)
    elseif bucket >= from then
      local n = tonumber(all[j + 1])
      if kind == 'c' then calls = calls + n
      elseif kind == 'f' then failures = failures + n
      else slow = slow + n end
    end
  end
  out[i] = {calls, failures, slow}
end
return out
"#;
