-- wrk script for the "echo" workload: POST /echo with a 1 KiB body.
-- The body is "0123456789abcdef" x 64 = 1024 bytes; bench/run.sh builds the
-- same bytes to check each server's answer before measuring.
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 64)
wrk.headers["Content-Type"] = "application/octet-stream"
