using System.Net.Sockets;
using System.Security.Authentication;
using Grpc.Core;

namespace Modular.Control;

/// <summary>
/// One line for a failed control-plane connection (management, signal), for the log and for status:
/// gRPC reports a closed port, an unreachable host and an unknown name all as "Unavailable: Error
/// connecting to subchannel", and https against a plaintext server as an exception chain. This looks
/// through the RpcException's debug exception and the inner exceptions for what actually happened.
/// </summary>
public static class ConnectionProblem
{
    /// <param name="e">What the call threw.</param>
    /// <param name="target">The URL that was being reached (names the host and port); null: "the server".</param>
    public static string Describe(Exception e, Uri? target = null)
    {
        var host = target?.Host is { Length: > 0 } h ? h : "the server";
        var endpoint = target is null ? host : $"{host}:{target.Port}";
        var chain = Chain(e).ToList();

        if (chain.OfType<AuthenticationException>().FirstOrDefault() is { } tls)
        {
            return $"TLS handshake failed with {endpoint}: {TlsReason(tls)}";
        }

        if (chain.OfType<SocketException>().FirstOrDefault() is { } socket)
        {
            return socket.SocketErrorCode switch
            {
                SocketError.ConnectionRefused => $"connection refused by {endpoint}",
                SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => $"cannot resolve {host}",
                SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.HostDown or SocketError.TimedOut
                    => $"{endpoint}: no route / timed out",
                SocketError.ConnectionReset or SocketError.ConnectionAborted => $"{endpoint} closed the connection",
                _ => $"{endpoint}: {socket.Message}",
            };
        }

        if (chain.OfType<HttpRequestException>().FirstOrDefault() is { } http)
        {
            switch (http.HttpRequestError)
            {
                case HttpRequestError.NameResolutionError:
                    return $"cannot resolve {host}";
                case HttpRequestError.SecureConnectionError:
                    return $"TLS handshake failed with {endpoint}: {http.Message}";
                case HttpRequestError.HttpProtocolError or HttpRequestError.VersionNegotiationError or HttpRequestError.ResponseEnded:
                    return $"{endpoint} does not speak gRPC over HTTP/2 ({http.Message}){PlaintextHint(target)}";
            }
        }

        if (chain.Any(x => x is TimeoutException) || (e is RpcException { StatusCode: StatusCode.DeadlineExceeded }))
        {
            return $"{endpoint}: no route / timed out";
        }

        return e is RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : e.Message;
    }

    private static string TlsReason(AuthenticationException tls)
    {
        // A plaintext server answers the ClientHello with something that is not a TLS record (an HTTP/2
        // frame, an HTTP/1 error) or just closes: SslStream calls that a bad frame or an EOF.
        var text = string.Join(" ", Chain(tls).Select(x => x.Message));
        if (text.Contains("frame", StringComparison.OrdinalIgnoreCase) || text.Contains("EOF", StringComparison.Ordinal)
            || text.Contains("unexpected", StringComparison.OrdinalIgnoreCase) || Chain(tls).Skip(1).Any(x => x is IOException))
        {
            return "the server does not speak TLS (is it plaintext? use http://)";
        }

        return tls.Message.Contains("certificate", StringComparison.OrdinalIgnoreCase)
            ? $"the server's certificate is not trusted ({tls.Message.TrimEnd('.')}; see tls_ca)"
            : tls.Message;
    }

    private static string PlaintextHint(Uri? target)
        => target?.Scheme == Uri.UriSchemeHttp ? " (does it want TLS? use https://)" : "";

    /// <summary>The exception, its inner exceptions (all of an aggregate's) and an RpcException's debug exception, depth first.</summary>
    private static IEnumerable<Exception> Chain(Exception e)
    {
        var pending = new Stack<Exception>();
        pending.Push(e);
        var seen = 0;
        while (pending.Count > 0 && seen++ < 32)
        {
            var next = pending.Pop();
            yield return next;
            if (next is AggregateException aggregate)
            {
                foreach (var inner in aggregate.InnerExceptions.Reverse())
                {
                    pending.Push(inner);
                }
            }
            else if (next.InnerException is { } inner)
            {
                pending.Push(inner);
            }

            if (next is RpcException { Status.DebugException: { } debug })
            {
                pending.Push(debug);
            }
        }
    }
}
