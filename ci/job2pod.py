"""Turn one Job of the rendered kustomization into a file `podman kube play` accepts.

Podman 4.3 rejects ``kind: Job``/``CronJob``, so this plays the part of the Job controller and
of the kubelet's environment handling, for one pod:

* the Job's pod template becomes a ``kind: Pod`` named after the Job, labelled
  ``batch.kubernetes.io/job-name``/``job-name`` as the Job controller does (our release id
  comes from that label through the downward API);
* ``$(VAR)`` references in command/args are expanded from the container's env (envFrom
  ConfigMaps, Secret keys, literal values, ``fieldRef`` labels/name/namespace) with
  Kubernetes' rules (undefined references stay as written, ``$$`` escapes), so the result
  does not depend on what this podman version expands;
* ConfigMaps the pod uses are copied into the play file (podman mounts them as volumes and
  reads them for envFrom), with optional overrides;
* the Secrets the pod uses through ``secretKeyRef``/``secretRef`` become podman secrets
  holding JSON ``{key: base64(value)}``, the only form podman 4.3's ``secretKeyRef`` reads;
* Secret *volumes* (the ledger URL file) are played as ConfigMap volumes with the same keys,
  items and mount: podman 4.3.1's ``kube play`` panics on a ``secret`` volume (nil pointer in
  ``kube.VolumeFromSecret``), and its ConfigMap volumes give the container the same read-only
  files. Secret values can be overridden (the test ledger URL);
* PersistentVolumeClaims are NOT emitted: the caller creates podman volumes named like the
  claims (input filled with data, output writable), as a provisioner would.

usage: job2pod.py RENDERED.yaml OUT.yaml --job NAME --image IMAGE
                  [--secret NAME:KEY=VALUE ...] [--config NAME:KEY=VALUE ...]
                  [--config-file NAME:KEY=PATH ...]
ConfigMap NAME is the generator's name (kustomize's hash suffix is matched as a prefix).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined vars are replaced, $$ becomes $, others are kept."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def _find(docs: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """A rendered object by kind and (generator) name, ignoring kustomize's hash suffix."""
    if (kind, name) in docs:
        return docs[(kind, name)]
    hits = [d for (k, n), d in docs.items() if k == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", n)]
    if len(hits) != 1:
        sys.exit(f"job2pod: {kind} {name!r} not found (or ambiguous) in the rendered manifests")
    return hits[0]


def _secret_values(sec: dict[str, Any]) -> dict[str, str]:
    vals = {k: base64.b64decode(v).decode() for k, v in (sec.get("data") or {}).items()}
    vals.update(sec.get("stringData") or {})
    return vals


def _container_env(c: dict[str, Any], pod_meta: dict[str, Any], docs: dict[Any, Any],
                   secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(_find(docs, "ConfigMap", src["configMapRef"]["name"]).get("data") or {})
        elif "secretRef" in src:
            env.update(secrets[src["secretRef"]["name"]])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
            continue
        ref = e.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            env[e["name"]] = _find(docs, "ConfigMap", r["name"])["data"][r["key"]]
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            env[e["name"]] = secrets[r["name"]][r["key"]]
        elif "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            m = _LABEL.match(path)
            if m:
                env[e["name"]] = str(pod_meta.get(m.group(1), {}).get(m.group(2), ""))
            elif path == "metadata.name":
                env[e["name"]] = pod_meta["name"]
            elif path == "metadata.namespace":
                env[e["name"]] = "default"
    return env


def _kv(spec: str) -> tuple[str, str, str]:
    name, _, rest = spec.partition(":")
    key, sep, value = rest.partition("=")
    if not (name and key and sep):
        sys.exit(f"job2pod: expected NAME:KEY=VALUE, got {spec!r}")
    return name, key, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rendered", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--job", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--config-file", action="append", default=[])
    ap.add_argument("--no-podman-secrets", action="store_true",
                    help="do not create podman secrets (for tests)")
    a = ap.parse_args(argv)

    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all(a.rendered.read_text()) if d}
    job = docs.get(("Job", a.job)) or sys.exit(f"job2pod: no Job named {a.job!r}")
    for spec in a.config:
        name, key, value = _kv(spec)
        _find(docs, "ConfigMap", name).setdefault("data", {})[key] = value
    for spec in a.config_file:
        name, key, path = _kv(spec)
        _find(docs, "ConfigMap", name).setdefault("data", {})[key] = Path(path).read_text()

    tpl = copy.deepcopy(job["spec"]["template"])
    spec = tpl["spec"]
    labels = dict(tpl.get("metadata", {}).get("labels", {}))
    labels.update({"batch.kubernetes.io/job-name": a.job, "job-name": a.job})
    meta = {"name": a.job, "labels": labels,
            "annotations": dict(tpl.get("metadata", {}).get("annotations", {}))}

    containers = spec.get("initContainers", []) + spec["containers"]
    secret_names = {e["valueFrom"]["secretKeyRef"]["name"] for c in containers
                    for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    secret_names |= {s["secretRef"]["name"] for c in containers for s in c.get("envFrom", [])
                     if "secretRef" in s}
    volume_secrets = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    secrets = {_find(docs, "Secret", n)["metadata"]["name"]: _secret_values(_find(docs, "Secret", n))
               for n in secret_names | volume_secrets}
    for s in a.secret:
        name, key, value = _kv(s)
        # a generator's name matches its rendered name-<hash>
        full = next((n for n in secrets if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", n)),
                    name)
        secrets.setdefault(full, {})[key] = value

    for c in containers:
        c["image"] = a.image
        c["imagePullPolicy"] = "Never"
        env = _container_env(c, meta, docs, secrets)
        for field in ("command", "args"):
            if field in c:
                c[field] = [expand(str(x), env) for x in c[field]]
        # podman resolves these itself, but not all of them: hand it the resolved values
        # (secrets stay secretKeyRef so podman's secret path is exercised too).
        new_env = []
        for e in c.get("env", []):
            if "fieldRef" in e.get("valueFrom", {}):
                new_env.append({"name": e["name"], "value": env[e["name"]]})
            else:
                new_env.append(e)
        if new_env:
            c["env"] = new_env

    played_secrets: list[dict[str, Any]] = []
    for v in spec.get("volumes", []):
        if "secret" in v:
            sec = v.pop("secret")
            v["configMap"] = {k: val for k, val in sec.items() if k != "secretName"}
            v["configMap"]["name"] = sec["secretName"]
            played_secrets.append({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": sec["secretName"]},
                                   "data": secrets[sec["secretName"]]})
    cm_names = {v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}
    cm_names -= {d["metadata"]["name"] for d in played_secrets}
    cm_names |= {s["configMapRef"]["name"] for c in containers for s in c.get("envFrom", [])
                 if "configMapRef" in s}
    out_docs: list[dict[str, Any]] = []
    for n in sorted(cm_names):
        cm = _find(docs, "ConfigMap", n)
        out_docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": cm["metadata"]["name"]}, "data": cm.get("data", {})})
    out_docs += played_secrets
    out_docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})

    env_secrets = {n: vals for n, vals in secrets.items()
                   if n in secret_names or n not in volume_secrets}
    if not a.no_podman_secrets:
        for n, vals in env_secrets.items():
            data = {k: base64.b64encode(v.encode()).decode() for k, v in vals.items()}
            subprocess.run(["podman", "secret", "rm", n], capture_output=True, check=False)
            subprocess.run(["podman", "secret", "create", n, "-"], input=json.dumps(data).encode(),
                           check=True, capture_output=True)
    a.out.write_text(yaml.safe_dump_all(out_docs, sort_keys=False))
    print(json.dumps({"pod": a.job, "containers": [c["name"] for c in containers],
                      "secrets": sorted(env_secrets),
                      "secret_volumes": sorted(d["metadata"]["name"] for d in played_secrets)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
