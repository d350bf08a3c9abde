#!/usr/bin/env bash
# Certificates for the ssi-webhook made outside the cluster: a CA, a serving certificate for
# <service>.<namespace>.svc signed by it, and the TLS Secret, for the chart's
# webhook.certificate.source=existing (the chart can also generate them, or use cert-manager).
#
#   certs/generate.sh [--service ssi-webhook] [--namespace secrets-store-integration]
#                     [--out certs/out] [--days 365] [--ip 127.0.0.1]... [--dns name]...
#   kubectl apply -f certs/out/secret.yaml
#   helm install ... --set webhook.certificate.source=existing \
#                    --set-file webhook.certificate.caCert=certs/out/ca.crt
#
# Run it again before the serving certificate expires: it keeps the CA (so the caBundle stays
# valid) and issues a new serving certificate; re-apply the Secret, and the running webhook
# picks the new pair up without a restart. Delete ca.key and ca.crt to start a new CA.
# Needs openssl (1.1.1 or newer) and base64. Keys are EC P-256, written mode 0600.
set -euo pipefail

service=ssi-webhook
namespace=secrets-store-integration
out=certs/out
days=365
extra_sans=()

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
fail() { echo "certs/generate.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --service) service="${2:?--service needs a name}"; shift 2 ;;
    --namespace) namespace="${2:?--namespace needs a name}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --ip) extra_sans+=("IP:${2:?--ip needs an address}"); shift 2 ;;
    --dns) extra_sans+=("DNS:${2:?--dns needs a name}"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "certs/generate.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done

dns_label='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
[[ "$service" =~ $dns_label ]] || fail "--service $service is not a DNS label (lowercase letters, digits, '-')"
[[ "$namespace" =~ $dns_label ]] || fail "--namespace $namespace is not a DNS label (lowercase letters, digits, '-')"
[[ "$days" =~ ^[1-9][0-9]{0,4}$ ]] || fail "--days $days is not a number of days (1..99999)"
command -v openssl >/dev/null || fail "openssl is not installed"

mkdir -p "$out"
umask 077
work="$(mktemp -d "$out/.generate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [ -f "$out/ca.crt" ] && [ -f "$out/ca.key" ]; then
  echo "keeping the CA in $out (its caBundle stays valid)"
  cp "$out/ca.crt" "$out/ca.key" "$work/"
else
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 3650 -subj "/CN=${service}-ca" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
  echo "new CA in $out"
fi

host="$service.$namespace.svc"
sans="DNS:$service,DNS:$service.$namespace,DNS:$host,DNS:$host.cluster.local"
for san in "${extra_sans[@]}"; do sans="$sans,$san"; done
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=$host" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
cat > "$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans
EXT
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -days "$days" -sha256 -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null

b64() { base64 -w0 < "$1"; }
cat > "$work/secret.yaml" <<YAML
# The webhook's serving certificate (made by certs/generate.sh). Holds a private key: do not commit.
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: ssi-webhook-tls
  namespace: $namespace
data:
  tls.crt: $(b64 "$work/tls.crt")
  tls.key: $(b64 "$work/tls.key")
  ca.crt: $(b64 "$work/ca.crt")
YAML
b64 "$work/ca.crt" > "$work/ca-bundle.b64"

for file in ca.crt ca.key tls.crt tls.key secret.yaml ca-bundle.b64; do
  mv -f "$work/$file" "$out/$file"
done
chmod 0644 "$out/ca.crt" "$out/tls.crt" "$out/ca-bundle.b64"
echo "serving certificate for $host (SANs $sans), valid $days days"
echo "deploy: kubectl apply -f $out/secret.yaml, then helm install with --set webhook.certificate.source=existing --set-file webhook.certificate.caCert=$out/ca.crt"
