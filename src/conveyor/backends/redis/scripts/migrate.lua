-- migrate: ARGV = prefix, the layout version this code writes (keys.LAYOUT_VERSION).
-- Records it on a new prefix or upgrades an older layout (returns 1); returns 0 when
-- the layout is current; returns 2 when an upgrade has more to do (call it again: a
-- large store is upgraded in steps, not in one long script); refuses a newer layout
-- (an older conveyor must not write it).
local want = tonumber(ARGV[2])
local raw = redis.call('GET', k_version())
if not raw then
  redis.call('SET', k_version(), ARGV[2])
  return 1
end
local have = tonumber(raw)
if have == want then return 0 end
if have > want then
  return redis.error_reply('CONVEYOR layout version ' .. raw .. ' is newer than this conveyor writes (' .. ARGV[2] .. ')')
end
if have < 5 then
  -- Version 5 splits the index of finished jobs, P:finished, by status (P:finished:<s>).
  -- Moved first and in steps of MOVE ids: the steps below run once, after the last one.
  local MOVE = 5000
  local old = PREFIX .. 'finished'
  local rows = redis.call('ZRANGE', old, 0, MOVE - 1, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local status = redis.call('HGET', k_job(rows[i]), 'status')
    if FINISHED[status] then redis.call('ZADD', k_finished(status), rows[i + 1], rows[i]) end
  end
  if #rows > 0 then
    redis.call('ZREMRANGEBYRANK', old, 0, #rows / 2 - 1)
    if redis.call('EXISTS', old) == 1 then return 2 end
  end
end
if have < 2 then
  -- Retired in version 2 (listing merges the status indexes): the index of every job
  -- and the per-topic indexes. Spelled here only: no script writes them any more.
  -- UNLINK: a large index is freed in the background, not inside this script.
  redis.call('UNLINK', PREFIX .. 'ids')
  for _, t in ipairs(redis.call('SMEMBERS', k_topics())) do redis.call('UNLINK', PREFIX .. 'topic:' .. t) end
end
if have < 3 then
  -- Retired in version 3 (one claim path): the idle-worker registry the enqueue script
  -- pushed jobs from. Spelled here only, like the version 1 keys above.
  redis.call('UNLINK', PREFIX .. 'idlers')
  for _, t in ipairs(redis.call('SMEMBERS', k_topics())) do redis.call('UNLINK', PREFIX .. 'idle:' .. t) end
end
if have < 4 then
  -- Version 4 scopes unique keys per topic: P:unique's fields become "<topic>\0<key>".
  -- Each field is rewritten from its holder's topic (a holder gone: the field goes).
  local flat = redis.call('HGETALL', k_unique())
  for i = 1, #flat, 2 do
    local key, id = flat[i], flat[i + 1]
    redis.call('HDEL', k_unique(), key)
    local topic = redis.call('HGET', k_job(id), 'topic')
    if topic then redis.call('HSET', k_unique(), topic .. '\0' .. key, id) end
  end
end
if have < 6 then
  -- Retired in version 6 (listings merge the (status, topic) indexes): the index of
  -- each status. Spelled here only, like the keys above.
  for _, s in ipairs({'pending', 'processing', 'completed', 'failed', 'cancelled'}) do
    redis.call('UNLINK', PREFIX .. 'status:' .. s)
  end
end
-- Version 7 stores a new job's settings that no script reads in one field, `fixed`, and
-- leaves fields at their defaults out (record.encode_job). Nothing moves: jobs stored
-- before it keep one field per Job field, which record.decode_job_map reads as well,
-- and the scripts read the same fields from both.
if have < 8 then
  -- Version 8 writes the ready member of a run_at before 1970 so that it sorts by that
  -- run_at (ready_member); before, every such member said run_at 0 and they started
  -- in id order. Those members come first within their priority level: each level's
  -- run of '0000000000000000' members is read, then the pre-1970 ones are rewritten.
  local zero = string.rep('0', 16)
  for _, t in ipairs(redis.call('SMEMBERS', k_topics())) do
    local rkey = k_ready(t)
    local level = redis.call('ZRANGE', rkey, 0, 0, 'WITHSCORES')
    while #level > 0 do
      local score = level[2]
      local found = {}
      local offset, page = 0, 100
      repeat
        local members = redis.call('ZRANGEBYSCORE', rkey, score, score, 'LIMIT', offset, page)
        local run = true
        for _, m in ipairs(members) do
          if string.sub(m, 1, 16) ~= zero then run = false break end
          found[#found + 1] = m
        end
        offset = offset + page
      until not run or #members < page
      for _, m in ipairs(found) do
        local id = string.sub(m, 17)
        local run_at = redis.call('HGET', k_job(id), 'run_at')
        if run_at and string.sub(run_at, 1, 1) == '-' then
          redis.call('ZREM', rkey, m)
          redis.call('ZADD', rkey, score, ready_member(run_at, id))
        end
      end
      level = redis.call('ZRANGEBYSCORE', rkey, '(' .. score, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    end
  end
end
redis.call('SET', k_version(), ARGV[2])
return 1
