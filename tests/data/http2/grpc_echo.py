"""A gRPC server and client (grpcio, no generated code: messages are raw bytes) for
tests/http2_live.rs.

`grpc_echo.py serve HOST:PORT` serves echo.Echo until killed; `grpc_echo.py call HOST:PORT`
makes, on one channel (one HTTP/2 connection): two unary calls, a failing one
(PERMISSION_DENIED), a server-streaming call (one request, three replies) and a bidirectional
one (three requests, three replies), and prints one line per call: method, requests, replies,
status code.
"""

import sys
from concurrent import futures

import grpc

SERVICE = "echo.Echo"


def unary(request, context):
    return request


def fail(request, context):
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")


def stream(request, context):
    for i in range(3):
        yield request + bytes([i])


def chat(requests, context):
    for request in requests:
        yield request[::-1]


def serve(addr):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(addr)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def call(addr):
    with grpc.insecure_channel(addr) as channel:
        path = lambda name: f"/{SERVICE}/{name}"
        for body in (b"hello", b"x" * 5000):
            reply = channel.unary_unary(path("Unary"))(body, timeout=10)
            assert reply == body
            print("Unary 1 1 0")
        try:
            channel.unary_unary(path("Fail"))(b"no", timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            print("Fail 1 0 7")
        replies = list(channel.unary_stream(path("Stream"))(b"s", timeout=10))
        assert len(replies) == 3
        print("Stream 1 3 0")
        replies = list(channel.stream_stream(path("Chat"))(iter([b"ab", b"cd", b"ef"]), timeout=10))
        assert replies == [b"ba", b"dc", b"fe"]
        print("Chat 3 3 0")


if __name__ == "__main__":
    {"serve": serve, "call": call}[sys.argv[1]](sys.argv[2])
