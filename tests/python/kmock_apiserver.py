"""A fake Kubernetes API server for wiring tests of `llmgate-operator --source kubernetes`.

Usage: kmock_apiserver.py OBJECTS.json PORT_FILE
Serves the llmgate resources, Secrets and Leases on 127.0.0.1 (an ephemeral port, written to
PORT_FILE), seeded with the objects in OBJECTS.json, until SIGTERM. Tests read and change
objects over its HTTP API like any client.

kmock (PyPI) is an in-memory emulator: list, watch, create, merge-patch, delete. It has no
resourceVersion, generation or SSA semantics, so it shows wiring, not API server behaviour.
"""

import asyncio
import json
import signal
import sys

import kmock

RESOURCES = {
    "llmgate.dev/v1alpha1/modelendpoints": ("ModelEndpoint", "modelendpoint"),
    "llmgate.dev/v1alpha1/accesspolicies": ("AccessPolicy", "accesspolicy"),
    "llmgate.dev/v1alpha1/apikeys": ("ApiKey", "apikey"),
    "llmgate.dev/v1alpha1/teambudgets": ("TeamBudget", "teambudget"),
    "llmgate.dev/v1alpha1/identityproviders": ("IdentityProvider", "identityprovider"),
    "llmgate.dev/v1alpha1/gatewaytokens": ("GatewayTokens", "gatewaytokens"),
    "v1/secrets": ("Secret", "secret"),
    "coordination.k8s.io/v1/leases": ("Lease", "lease"),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "endpointslice"),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def plural_of(obj):
    kind = obj["kind"]
    for key, (k, _) in RESOURCES.items():
        if k == kind:
            return key
    raise ValueError(f"unknown kind {kind}")


async def main(objects_path, port_path):
    with open(objects_path) as f:
        objects = json.load(f)
    async with kmock.KubernetesEmulator() as emu:
        for key, (kind, singular) in RESOURCES.items():
            sub = {"status"} if key.startswith("llmgate.dev") else set()
            emu.resources[key] = kmock.ResourceInfo(
                kind=kind, singular=singular, namespaced=True, verbs=VERBS, subresources=sub
            )
        for obj in objects:
            meta = obj["metadata"]
            emu.objects[plural_of(obj), meta.get("namespace", "default"), meta["name"]] = obj
        async with kmock.Server(emu) as server:
            with open(port_path, "w") as f:
                f.write(str(server.port))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
