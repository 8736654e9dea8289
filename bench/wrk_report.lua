-- wrk's own counters as one JSON line after the run (bench/bench_rollout.py reads it).
-- Only done() is defined: no per-request Lua, so wrk runs at full speed.
-- errors_status counts answers with a status above 399 (wrk's "Non-2xx or 3xx responses").
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
      '"errors_connect": %.0f, "errors_read": %.0f, "errors_write": %.0f, ' ..
      '"errors_status": %.0f, "errors_timeout": %.0f, ' ..
      '"latency_p50_us": %.0f, "latency_p99_us": %.0f, "latency_max_us": %.0f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
