// cert-manager's CRDs, for the server-side dry run of the chart's cert-manager variant
// (tests/bed/provision.sh copies deploy/crds from this module; nothing is built).
module ssi.test/certmanager

go 1.26.0

require github.com/cert-manager/cert-manager v1.21.2
