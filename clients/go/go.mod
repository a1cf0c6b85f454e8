// The Go client of pyexec, in the clients/go folder of the repository:
// releases are tagged clients/go/vX.Y.Z. CI builds it offline against
// Debian 12's Go packages (run_tests.sh, debian_vendor.sh); README.md,
// "Versions", says which versions these requirements are.
module github.com/pyexec/pyexec/clients/go

go 1.19

require (
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/golang/protobuf v1.5.2 // indirect
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/sys v0.5.0 // indirect
	golang.org/x/text v0.7.0 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013 // indirect
)
