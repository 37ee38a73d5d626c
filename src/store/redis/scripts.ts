/**
 * The engine's Lua scripts. Redis runs a script atomically, so in `append` the stream order is
 * the publish order: every node receives a sandbox's events in id order, however many nodes
 * append to it at once. Both scripts touch only keys of one hash tag (one Cluster slot).
 *
 * Retention is exact, as in the embedded stores: the count limit drops exactly the oldest
 * entries past it, and the age limit (MINID) every entry older than now - age. `MAXLEN ~` would
 * be cheaper but keeps up to a node's worth (100) of extra entries and, worse, Redis 7.0 does not
 * record what trimming removed (XINFO's max-deleted-entry-id stays 0-0 after XTRIM), so the
 * trimmed-through id that tells `trimmed` from `unknown` could not be known. The scripts record
 * it in the meta hash (`tt`) before trimming.
 */

/** Shared: TIME in ms, and the age trim (used by append and by the replay read). */
const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function idms(id) return tonumber(string.match(id, '^(%d+)-')) end
local function trimAge(maxAge)
  if maxAge <= 0 then return end
  local cutoff = now - maxAge
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if first and idms(first[1]) < cutoff then
    local bound = string.format('%.0f', cutoff) .. '-0'
    local last = redis.call('XREVRANGE', KEYS[1], '(' .. bound, '-', 'COUNT', 1)[1]
    if last then redis.call('HSET', KEYS[2], 'tt', last[1]) end
    redis.call('XTRIM', KEYS[1], 'MINID', bound)
  end
end
`;

/**
 * KEYS: stream, meta.
 * ARGV: type, middle (JSON between id and timestamp), message header, max count (0: none),
 * max age ms (0: none), key ttl ms (0: none), sandbox channel, sharded ('1': SPUBLISH),
 * workspace channel ('' : none).
 * Returns the new id.
 */
export const APPEND_SCRIPT = `${PRELUDE}
local id = redis.call('XADD', KEYS[1], '*', 't', ARGV[1], 'm', ARGV[2])
local maxCount = tonumber(ARGV[4])
if maxCount > 0 then
  local len = redis.call('XLEN', KEYS[1])
  if len > maxCount then
    local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxCount)
    redis.call('HSET', KEYS[2], 'tt', old[#old][1])
    redis.call('XTRIM', KEYS[1], 'MAXLEN', maxCount)
  end
end
trimAge(tonumber(ARGV[5]))
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local message = ARGV[3] .. '{"id":"' .. id .. ARGV[2] .. string.match(id, '^(%d+)-') .. '}'
if ARGV[8] == '1' then
  redis.call('SPUBLISH', ARGV[7], message)
else
  redis.call('PUBLISH', ARGV[7], message)
end
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], message) end
return id
`;

/**
 * KEYS: stream, meta. ARGV: after id (inclusive start), count (0: all), max age ms (0: none).
 * Returns {0, now} when the stream does not exist, else
 * {1, now, last-generated-id, trimmed-through or '', first id or '', entries}.
 * The age trim runs here too, so a quiet sandbox's old events are gone when read, as in the
 * embedded stores (which prune on a timer).
 */
export const REPLAY_SCRIPT = `${PRELUDE}
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, string.format('%.0f', now)} end
trimAge(tonumber(ARGV[3]))
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last = ''
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local tt = redis.call('HGET', KEYS[2], 'tt')
local entries
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+')
end
return {1, string.format('%.0f', now), last, tt or '', first and first[1] or '', entries}
`;
