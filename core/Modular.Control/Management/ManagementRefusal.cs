using Google.Protobuf;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;

namespace Modular.Control.Management;

/// <summary>
/// A refusal from management that the agent can trust: a <see cref="ManagementError"/> the server seals to the agent's
/// key and sends as the <see cref="TrailerKey"/> trailer beside the gRPC status, bound to the request it answers (the
/// request body's nonce is associated data). A bare gRPC status proves nothing (anyone on a plaintext path, or a TLS
/// terminator, can send one); only a refusal that opens with the pinned server key may make an agent drop its tunnels.
/// </summary>
public static class ManagementRefusal
{
    /// <summary>The binary trailer (gRPC "-bin" keys carry bytes) holding the sealed <see cref="ManagementError"/>.</summary>
    public const string TrailerKey = "modular-sealed-error-bin";

    /// <summary>Server side: the status to throw, with the refusal sealed to <paramref name="agent"/> for the request whose body is <paramref name="requestBody"/>.</summary>
    public static RpcException Create(X25519KeyPair server, WgKey agent, ReadOnlySpan<byte> requestBody, StatusCode code, string detail)
    {
        var error = new ManagementError { Code = (int)code, Detail = detail };
        var box = Envelope.Seal(server, agent, Envelope.Purposes.ManagementError, error.ToByteArray(), RequestNonce(requestBody));
        return new RpcException(new Status(code, detail), new Metadata { { TrailerKey, box } });
    }

    /// <summary>
    /// Agent side: the refusal in <paramref name="e"/>'s trailers when it opens with <paramref name="server"/>'s key and
    /// answers the request whose body was <paramref name="requestBody"/>; null for a bare status (or one that does not open).
    /// </summary>
    public static ManagementRefusedException? TryOpen(X25519KeyPair agent, WgKey server, ReadOnlySpan<byte> requestBody, RpcException e)
    {
        if (e.Trailers.GetValueBytes(TrailerKey) is not { } box
            || !Envelope.TryOpen(agent, server, Envelope.Purposes.ManagementError, box, out var plaintext, RequestNonce(requestBody)))
        {
            return null;
        }

        try
        {
            var error = ManagementError.Parser.ParseFrom(plaintext);
            // Only the codes that mean "refused" count; anything else sealed is still no reason to drop tunnels.
            return (StatusCode)error.Code is StatusCode.PermissionDenied or StatusCode.NotFound ? new ManagementRefusedException(error, e) : null;
        }
        catch (InvalidProtocolBufferException)
        {
            return null;
        }
    }

    // The request body starts with its random 24-byte nonce: unique per request, so a refusal answers exactly one.
    private static ReadOnlySpan<byte> RequestNonce(ReadOnlySpan<byte> requestBody)
        => requestBody[..Math.Min(requestBody.Length, Envelope.NonceSize)];
}

/// <summary>
/// Management refused this peer, and proved it (<see cref="ManagementRefusal"/>): the status and detail are the sealed
/// ones. NotFound: the peer was removed; PermissionDenied: unknown key, expired login or a refused setup key.
/// </summary>
public sealed class ManagementRefusedException : RpcException
{
    public ManagementRefusedException(ManagementError error, RpcException bare)
        : base(new Status((StatusCode)error.Code, error.Detail), bare.Trailers, error.Detail)
    {
    }
}
