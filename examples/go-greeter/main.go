// The greeter with the official StateFun Go SDK, served for statefun-rs.
//
//	go run . [-port 8000] [-close]
//
// Serves every function at http://127.0.0.1:<port>/statefun/<name>. Prints
// `PORT <n>` and `READY` once it listens (port 0 picks a free one). With
// -close the server disables keep-alive: every response carries
// `Connection: close` and the connection is closed after it.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/apache/flink-statefun/statefun-sdk-go/v3/pkg/statefun"
)

// Seen counts how often a name was greeted.
var Seen = statefun.ValueSpec{Name: "seen", ValueType: statefun.Int32Type}

// Greeter counts how often each name was seen and sends a greeting to the egress,
// exactly as the Python greeter in examples/python-greeter does.
func Greeter(ctx statefun.Context, message statefun.Message) error {
	name := message.AsString()
	var seen int32
	ctx.Storage().Get(Seen, &seen)
	seen++
	ctx.Storage().Set(Seen, seen)
	greeting := fmt.Sprintf("Hello %s!", name)
	if seen > 1 {
		greeting = fmt.Sprintf("Hello %s! I've seen you %d times.", name, seen)
	}
	ctx.SendEgress(statefun.KafkaEgressBuilder{
		Target: statefun.TypeNameFrom("example/greets"),
		Topic:  "greetings",
		Key:    name,
		Value:  greeting,
	})
	return nil
}

func main() {
	port := flag.Int("port", 8000, "port to listen on (0 = any free port)")
	closeEach := flag.Bool("close", false, "close the connection after every response (no keep-alive)")
	flag.Parse()

	builder := statefun.StatefulFunctionsBuilder()
	err := builder.WithSpec(statefun.StatefulFunctionSpec{
		FunctionType: statefun.TypeNameFrom("example/greeter"),
		States:       []statefun.ValueSpec{Seen},
		Function:     statefun.StatefulFunctionPointer(Greeter),
	})
	if err != nil {
		log.Fatalf("cannot register the greeter: %v", err)
	}
	http.Handle("/statefun/", builder.AsHandler())

	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatalf("cannot listen on port %d: %v", *port, err)
	}
	fmt.Printf("PORT %d\n", listener.Addr().(*net.TCPAddr).Port)
	fmt.Println("READY")
	server := &http.Server{}
	server.SetKeepAlivesEnabled(!*closeEach)
	log.Fatal(server.Serve(listener))
}
