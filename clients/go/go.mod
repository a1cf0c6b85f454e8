// Module-mode description of this client, with the dependency versions it is
// tested with (Debian 12's packages). CI builds in GOPATH mode
// (run_tests.sh), which ignores this file.
module pyexec.dev/go

go 1.19

require (
	github.com/golang/protobuf v1.5.2 // indirect
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
