-- stats: ARGV = prefix, status...  Returns {count per status, {topic, count per status}...}.
-- Topics left with no job are dropped from P:topics here (atomic with enqueue).
local by_status = {}
for i = 2, #ARGV do by_status[#by_status + 1] = redis.call('ZCARD', k_status(ARGV[i])) end
local topics = {}
for _, t in ipairs(redis.call('SMEMBERS', k_topics())) do
  local row, n = {t}, 0
  for i = 2, #ARGV do
    row[#row + 1] = redis.call('ZCARD', k_topic_status(ARGV[i], t))
    n = n + row[#row]
  end
  if n == 0 then
    redis.call('SREM', k_topics(), t)
  else
    topics[#topics + 1] = row
  end
end
return {by_status, topics}
