-- stats: ARGV = prefix, status...  Returns {count per status, {topic, count per status}...}.
-- Counts per status are the sums over the topics (there is no index per status).
-- Topics left with no job are dropped from P:topics here (atomic with enqueue).
local by_status = {}
for i = 2, #ARGV do by_status[i - 1] = 0 end
local topics = {}
for _, t in ipairs(redis.call('SMEMBERS', k_topics())) do
  local row, n = {t}, 0
  for i = 2, #ARGV do
    local c = redis.call('ZCARD', k_topic_status(ARGV[i], t))
    row[i] = c
    by_status[i - 1] = by_status[i - 1] + c
    n = n + c
  end
  if n == 0 then
    redis.call('SREM', k_topics(), t)
  else
    topics[#topics + 1] = row
  end
end
return {by_status, topics}
