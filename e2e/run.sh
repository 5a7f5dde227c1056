#!/usr/bin/env bash
# End-to-end against a real Kubernetes cluster: install the CRDs, apply objects into a
# throwaway namespace, run the operator (--source kubernetes) and a data plane against it, wait
# for the conditions, call the gateway, add the missing Secret and watch the model come up.
#
# Opt in with LLMGATE_E2E=1 and a kubeconfig for a disposable cluster (kind, k3d, ...).
# Without LLMGATE_E2E=1 it says so and exits 0; with it, a missing kubectl or an unreachable
# cluster is a failure (exit 1), so a broken setup never looks green. LLMGATE_E2E_KEEP=1 keeps
# the namespace for debugging.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

skip() { echo "e2e: skipped: $*"; exit 0; }
fail() { echo "e2e: error: $*" >&2; exit 1; }
[ "${LLMGATE_E2E:-}" = "1" ] || skip "set LLMGATE_E2E=1 with a kubeconfig for a disposable cluster to run it"
command -v kubectl >/dev/null || fail "LLMGATE_E2E=1 but kubectl is not installed"
kubectl version --request-timeout=5s >/dev/null 2>&1 || fail "LLMGATE_E2E=1 but no cluster is reachable with the current kubeconfig"

target="${CARGO_TARGET_DIR:-target}"
cargo build -q -p llmgate-operator -p llmgate-dataplane --bins
work=$(mktemp -d)
ns="llmgate-e2e-$(date +%s)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ "${LLMGATE_E2E_KEEP:-}" != "1" ]; then
        kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    fi
    echo "e2e: logs in $work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "e2e: installing CRDs, namespace $ns"
kubectl apply -f charts/llmgate/crds/ >/dev/null
for crd in modelendpoints accesspolicies apikeys teambudgets identityproviders gatewaytokens; do
    kubectl wait --for=condition=Established "crd/$crd.llmgate.dev" --timeout=60s >/dev/null
done
kubectl create namespace "$ns" >/dev/null
kubectl apply -n "$ns" -f e2e/manifests.yaml >/dev/null

head -c 24 /dev/urandom | base64 > "$work/token"
dist=$(free_port); admin=$(free_port); api=$(free_port); dp_admin=$(free_port)
"$target/debug/llmgate-operator" --source kubernetes --namespaces "$ns" --lease-namespace "$ns" \
    --token-file "$work/token" --distribution-listen "127.0.0.1:$dist" --admin-listen "127.0.0.1:$admin" \
    > "$work/operator.log" 2>&1 &
pids+=($!)
"$target/debug/llmgate-dataplane" --control-plane "http://127.0.0.1:$dist" \
    --control-plane-token-file "$work/token" --state-dir "$work/state" \
    --listen "127.0.0.1:$api" --admin-listen "127.0.0.1:$dp_admin" --audit-log "$work/audit.jsonl" \
    > "$work/dataplane.log" 2>&1 &
pids+=($!)

echo "e2e: waiting for conditions"
kubectl wait -n "$ns" --for=condition=Ready modelendpoint/mock --timeout=60s
kubectl wait -n "$ns" --for=jsonpath='{.status.conditions[?(@.type=="ResolvedRefs")].reason}'=MissingSecret \
    modelendpoint/needs-secret --timeout=60s

call() {
    curl -sf "http://127.0.0.1:$api/v1/chat/completions" -H "Authorization: Bearer sk-e2e-key" \
        -H "Content-Type: application/json" -d "{\"model\": \"$1\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}"
}
for _ in $(seq 1 60); do call e2e-mock >/dev/null 2>&1 && break; sleep 1; done
call e2e-mock | grep -q "hello from a real cluster" || { echo "e2e: the gateway did not serve e2e-mock"; exit 1; }
echo "e2e: e2e-mock served through the gateway"

kubectl create secret generic e2e-keys -n "$ns" --from-literal=openai-api-key=sk-not-a-real-key >/dev/null
kubectl wait -n "$ns" --for=condition=Ready modelendpoint/needs-secret --timeout=60s
for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$api/v1/models" -H "Authorization: Bearer sk-e2e-key" | grep -q e2e-openai && break
    sleep 1
done
curl -sf "http://127.0.0.1:$api/v1/models" -H "Authorization: Bearer sk-e2e-key" | grep -q e2e-openai \
    || { echo "e2e: e2e-openai never appeared after its Secret"; exit 1; }
echo "e2e: passed"
