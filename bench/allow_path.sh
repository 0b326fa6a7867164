# The allow-path scenario bench/load.sh and bench/callgrind.sh measure, for
# them to source: one agent, one route, a policy reading the JSON body, and
# a ~1 KB JSON POST.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The policy every measured call passes: it reads `body.amount`, so the
# body is parsed as far as the policy needs.
write_allow_policies() { # dir
  mkdir -p "$1"
  cp policies/schema.cedarschema "$1/"
  cat > "$1/bench.cedar" <<'CEDAR'
@id("bench-allow") permit(principal in Group::"support", action, resource == Route::"tool")
when { context has body && context.body has amount && context.body.amount < 1000000 };
CEDAR
}

# The request body, and wrk's script that posts it as the agent.
allow_body() { python3 -c 'import json; print(json.dumps({"customer_id":"c-1","amount":50,"note":"x"*960}))'; }
write_post_lua() { # file body
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = [[$2]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
LUA
}

# Airlock's config: the agent `bench` (key `bench-key`) and route `tool`.
write_airlock_config() { # file listen admin upstream_port audit_file
  cat > "$1" <<YAML
listen: 127.0.0.1:$2
admin: {listen: 127.0.0.1:$3, token: bench}
policies: policies
store: "sqlite::memory:"
audit: $5
agents:
  - {id: bench, key: bench-key, groups: [support]}
routes:
  - {name: tool, prefix: /tool, upstream: "http://127.0.0.1:$4"}
YAML
}
