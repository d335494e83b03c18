-- The Lua alternative measured in redis_apply_cost.py (not what cowlogd
-- runs): apply a batch only if the marker is below its first sequence number.
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if applied >= tonumber(ARGV[1]) then return {0} end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
local failed = {}
local i = 6
for k = 2, #KEYS do
  local last_index = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local stop = i + n - 1
  local pushed = 0
  local err
  while i <= stop do
    local j = math.min(i + 999, stop)
    local r = redis.pcall('LPUSH', KEYS[k], unpack(ARGV, i, j))
    if type(r) == 'table' and r.err then err = r.err break end
    pushed = pushed + (j - i + 1)
    i = j + 1
  end
  i = stop + 1
  if err == nil then
    local r = redis.pcall('LTRIM', KEYS[k], 0, last_index)
    if type(r) == 'table' and r.err then err = r.err end
  end
  if err then
    failed[#failed + 1] = k - 1
    failed[#failed + 1] = pushed
    failed[#failed + 1] = err
  end
end
local published = 0
local channel = ARGV[4]
for p = i, #ARGV do
  local r = redis.pcall('PUBLISH', channel, ARGV[p])
  if type(r) ~= 'table' then published = published + 1 end
end
local reply = {1, published}
for f = 1, #failed do reply[#reply + 1] = failed[f] end
return reply
