/**
 * The engine's Lua scripts. Redis runs a script atomically, so in `append` the stream order is
 * the publish order: every node receives a sandbox's events in id order, however many nodes
 * append to it at once. The stream and meta keys share one hash tag (one Cluster slot); the
 * workspace keys (the sandbox index, docs/scaling.md) are passed only when the engine keeps
 * them, which a Redis Cluster cannot (a script there writes keys of one slot only).
 *
 * Retention is exact, as in the embedded stores: the count limit drops exactly the oldest
 * entries past it, the age limit every entry older than now - age, and the byte limit the oldest
 * entries while the stream's event lines add up to more than it (the newest always stays). The
 * meta hash keeps `b`, the bytes of the retained event lines (added by each append, subtracted
 * by each trim from the trimmed entries themselves), because XTRIM cannot count bytes. `MAXLEN ~`
 * would be cheaper but keeps up to a node's worth (100) of extra entries and, worse, Redis 7.0
 * does not record what trimming removed (XINFO's max-deleted-entry-id stays 0-0 after XTRIM), so
 * the trimmed-through id that tells `trimmed` from `unknown` could not be known. The scripts
 * record it in the meta hash (`tt`) as they trim.
 */

/** Shared: TIME in ms, an event line's size, and retention (used by append and by the replay read). */
const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function idms(id) return tonumber(string.match(id, '^(%d+)-')) end
-- Bytes of an entry's event line: '{"id":"' .. id .. m .. ms .. '}' (keys.ts, jsonFromParts),
-- and its workspace order (0: none).
local function entryBytes(entry)
  local fields = entry[2]
  local m, o = '', 0
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then m = fields[i + 1] elseif fields[i] == 'o' then o = tonumber(fields[i + 1]) end
  end
  return 8 + #entry[1] + #m + #string.match(entry[1], '^(%d+)-'), o
end
-- Drops the oldest entries while one of the limits says so: more than maxCount (0: none),
-- older than cutoff ms (0: none), or more than maxBytes (0: none; the newest always stays).
-- len and bytes: the stream's entries and retained bytes now (bytes nil: not known, then no byte
-- limit applies and the counter is decremented in place). Reads the entries it drops, plus
-- the first one it keeps when it must look at its age, in growing pages. Returns the highest
-- workspace order it dropped (0: none).
local function trim(len, bytes, maxCount, cutoff, maxBytes)
  local function over(kept, left, ms)
    if maxCount > 0 and kept > maxCount then return true end
    if ms < cutoff then return true end
    return maxBytes > 0 and kept > 1 and left > maxBytes
  end
  if bytes == nil then maxBytes = 0 end
  if not ((maxCount > 0 and len > maxCount) or cutoff > 0 or (maxBytes > 0 and len > 1 and bytes > maxBytes)) then
    return 0
  end
  local kept, left, dropped, last, order = len, bytes or 0, 0, nil, 0
  local start, grow = '-', 1
  while kept > 0 do
    -- What the count limit drops for sure, else one entry, then more while they keep going.
    local n = math.min(grow, 256)
    if maxCount > 0 and kept - maxCount > 0 then
      n = math.min(kept - maxCount, 256)
    else
      grow = grow * 2
    end
    local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', n)
    local stop = #entries < n
    for _, entry in ipairs(entries) do
      if not over(kept, left, idms(entry[1])) then
        stop = true
        break
      end
      local size, o = entryBytes(entry)
      last, kept, left, dropped = entry[1], kept - 1, left - size, dropped + size
      if o > order then order = o end
    end
    if stop then break end
    start = '(' .. last
  end
  if last == nil then return 0 end
  redis.call('XTRIM', KEYS[1], 'MAXLEN', kept)
  -- A stream written before bytes were counted has entries that were never added: never below 0.
  if bytes ~= nil then
    redis.call('HSET', KEYS[2], 'tt', last, 'b', math.max(0, left))
  else
    redis.call('HSET', KEYS[2], 'tt', last)
    if redis.call('HINCRBY', KEYS[2], 'b', -dropped) < 0 then redis.call('HSET', KEYS[2], 'b', 0) end
  end
  return order
end
local function ageCutoff(maxAge)
  if maxAge <= 0 then return 0 end
  return now - maxAge
end
`;

/**
 * KEYS: stream, meta, and with the workspace keys: the workspace's sandbox index, the index of
 * workspaces, the workspace's order stream, the hash of last orders (keys.ts).
 * ARGV: type, middle (JSON between id and timestamp), message header, max count (0: none),
 * max age ms (0: none), key ttl ms (0: none), sandbox channel, sharded ('1': SPUBLISH),
 * workspace channel ('' : none), max bytes (0: none), ephemeral ('1'), sandbox id, workspace id.
 * Returns {new id, workspace order or ''}.
 *
 * The workspace order (docs/protocol.md, "Pattern resume"): each stored event takes the next
 * number of its workspace (HINCRBY of the hash of last orders), kept in its stream entry (`o`),
 * and the workspace's order stream gets an entry `0-<order>` naming the sandbox and the event
 * id. In one script, so the order is exact across sandboxes and nodes. The order stream holds
 * only what is retained: when a sandbox's trim drops events it is trimmed through the highest
 * order they had (so a cursor before that finds its next order missing: `trimmed`), and its
 * oldest entries go with the age limit.
 *
 * An ephemeral event (docs/operations.md, "Ephemeral events") takes its id from XADD, so that
 * it is in the sandbox's order with every other event, and is deleted at once (XDEL): the
 * stream's last id moves on, nothing is retained (Redis keeps a deleted entry's few bytes until
 * the rest of its stream node goes), and it counts against no limit.
 */
export const APPEND_SCRIPT = `${PRELUDE}
local id
local order = ''
if ARGV[11] == '1' then
  id = redis.call('XADD', KEYS[1], '*', 'e', '')
  redis.call('XDEL', KEYS[1], id)
else
  if KEYS[5] then
    local next = redis.call('HINCRBY', KEYS[6], ARGV[13], 1)
    if next == 1 and redis.call('EXISTS', KEYS[5]) == 1 then
      -- A new counter for an order stream that exists (the hash was lost): go on after the
      -- stream's last number, never below it (XADD would refuse the id after the event's XADD).
      local info = redis.call('XINFO', 'STREAM', KEYS[5])
      for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then next = tonumber(string.match(info[i + 1], '^0%-(%d+)$')) + 1 end
      end
      redis.call('HSET', KEYS[6], ARGV[13], next)
    end
    order = tostring(next)
    id = redis.call('XADD', KEYS[1], '*', 't', ARGV[1], 'm', ARGV[2], 'o', order)
    redis.call('XADD', KEYS[5], '0-' .. order, 's', ARGV[12], 'i', id)
  else
    id = redis.call('XADD', KEYS[1], '*', 't', ARGV[1], 'm', ARGV[2])
  end
  local bytes = redis.call('HINCRBY', KEYS[2], 'b', 8 + #id + #ARGV[2] + #string.match(id, '^(%d+)-'))
  local len = redis.call('XLEN', KEYS[1])
  if len == 1 and KEYS[3] then
    -- The sandbox holds events again: listed (an index member is dropped when its stream is gone).
    if redis.call('ZADD', KEYS[3], 0, ARGV[12]) == 1 then
      redis.call('ZADD', KEYS[4], tonumber(ARGV[13]), ARGV[13])
      -- Members whose stream expired go when listed, and here two sampled ones, so that an index
      -- nobody lists stays within about twice the sandboxes that hold events.
      for _, member in ipairs(redis.call('ZRANDMEMBER', KEYS[3], 2)) do
        if redis.call('EXISTS', 'se:{' .. ARGV[13] .. ':' .. member .. '}:events') == 0 then
          redis.call('ZREM', KEYS[3], member)
        end
      end
    end
  end
  local cutoff = ageCutoff(tonumber(ARGV[5]))
  local pruned = trim(len, bytes, tonumber(ARGV[4]), cutoff, tonumber(ARGV[10]))
  if KEYS[5] then
    -- The age limit, by the events' ids: what other sandboxes of the workspace no longer keep
    -- (after a trim through 'pruned' the oldest entries went already).
    if pruned > 0 then redis.call('XTRIM', KEYS[5], 'MINID', '0-' .. (pruned + 1)) end
    local first = pruned == 0 and cutoff > 0 and redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1)[1]
    if first and idms(first[2][4]) < cutoff then
      local old = redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 256)
      local through = nil
      for _, entry in ipairs(old) do
        if idms(entry[2][4]) >= cutoff then break end
        through = entry[1]
      end
      if through then redis.call('XTRIM', KEYS[5], 'MINID', '0-' .. (tonumber(string.match(through, '^0%-(%d+)$')) + 1)) end
    end
  end
end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local message = ARGV[3] .. '{"id":"' .. id .. ARGV[2] .. string.match(id, '^(%d+)-') .. '}'
if order ~= '' then message = 'o' .. order .. ':' .. message end
if ARGV[8] == '1' then
  redis.call('SPUBLISH', ARGV[7], message)
else
  redis.call('PUBLISH', ARGV[7], message)
end
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], message) end
return {id, order}
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
trim(redis.call('XLEN', KEYS[1]), nil, 0, ageCutoff(tonumber(ARGV[3])), 0)
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

/**
 * The ids of a history query, oldest first, without sending the events (HISTORY's paged reply
 * counts them first, docs/protocol.md). KEYS: stream. ARGV: floor id (inclusive), exact type
 * ('' : any), limit, newest ('1': the newest `limit`). Reads the stream in pages inside Redis.
 */
export const HISTORY_IDS_SCRIPT = `
local limit = tonumber(ARGV[3])
local newest = ARGV[4] == '1'
local out = {}
local bound = newest and '+' or ARGV[1]
while #out < limit do
  local entries
  if newest then
    entries = redis.call('XREVRANGE', KEYS[1], bound, ARGV[1], 'COUNT', 64)
  else
    entries = redis.call('XRANGE', KEYS[1], bound, '+', 'COUNT', 64)
  end
  for _, entry in ipairs(entries) do
    local take = ARGV[2] == ''
    if not take then
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 't' then take = fields[i + 1] == ARGV[2] end
      end
    end
    if take then
      out[#out + 1] = entry[1]
      if #out >= limit then break end
    end
  end
  if #entries < 64 then break end
  bound = '(' .. entries[#entries][1]
end
return out
`;

/**
 * One page of a workspace's sandbox index (keys.ts), in sandbox id order. KEYS: the index.
 * ARGV: workspace id, start ('-' or '(<sandbox id>'), count. Returns {sandbox id, last id, ...}
 * for the sandboxes whose stream holds events, and `more` ('1' when the index goes on), dropping
 * members whose stream is gone.
 */
export const LIST_SCRIPT = `
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(members) do
  local key = 'se:{' .. ARGV[1] .. ':' .. member .. '}:events'
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], member)
  elseif redis.call('XLEN', key) > 0 then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        out[#out + 1] = member
        out[#out + 1] = info[i + 1]
      end
    end
  end
end
local more = '0'
if #members == tonumber(ARGV[3]) then more = '1' end
return {more, members[#members] or '', out}
`;

/** KEYS: stream. Returns {entries, last-generated-id} ({0, ''} when there is no stream). */
export const STREAM_LAST_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, last = 0, ''
for i = 1, #info, 2 do
  if info[i] == 'length' then length = info[i + 1] end
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
return {length, last}
`;

/**
 * A workspace's events after an order (docs/protocol.md, "Pattern resume"). KEYS: the
 * workspace's order stream, the hash of last orders. ARGV: workspace id, after, count, age cutoff
 * ms (0: none). Returns {last order, first order after `after` or '', missing ('1': an event
 * after the cursor is no longer retained), {order, sandbox id, entry, ...}}. The events are read
 * from their sandboxes' streams here, in one script, so the answer is one instant's.
 */
export const WORKSPACE_REPLAY_SCRIPT = `
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local refs = redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[2], '+', 'COUNT', tonumber(ARGV[3]))
local cutoff = tonumber(ARGV[4])
local out, missing = {}, '0'
for _, ref in ipairs(refs) do
  local order = string.match(ref[1], '^0%-(%d+)$')
  local sandbox, id = ref[2][2], ref[2][4]
  local found = redis.call('XRANGE', 'se:{' .. ARGV[1] .. ':' .. sandbox .. '}:events', id, id)[1]
  if found == nil or tonumber(string.match(id, '^(%d+)-')) < cutoff then
    missing = '1'
  else
    out[#out + 1] = order
    out[#out + 1] = sandbox
    out[#out + 1] = found
  end
end
local first = ''
if refs[1] then first = string.match(refs[1][1], '^0%-(%d+)$') end
return {tostring(last), first, missing, out}
`;
