using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;

namespace Modular.Control.Management;

/// <summary>
/// The agent's side of management: every request is sealed with the agent's WireGuard key to the
/// server key (which authenticates the agent), every reply is opened and verified. A refusal the server sealed to
/// this agent for the request (removed, expired, unknown key, setup key refused) surfaces as
/// <see cref="ManagementRefusedException"/>; every other gRPC failure, including a bare PermissionDenied or NotFound
/// that proves nothing, as a plain <see cref="RpcException"/>; a reply that fails verification throws
/// <see cref="InvalidDataException"/>.
/// </summary>
public sealed class ManagementClient
{
    private readonly ManagementService.ManagementServiceClient _client;
    private readonly X25519KeyPair _identity;
    private readonly TimeProvider _time;
    private WgKey? _serverKey;

    public ManagementClient(ChannelBase channel, X25519KeyPair identity, TimeProvider? time = null)
        : this(channel.CreateCallInvoker(), identity, time)
    {
    }

    /// <summary>Over <paramref name="calls"/> (a channel's, or a test's double of the server).</summary>
    public ManagementClient(CallInvoker calls, X25519KeyPair identity, TimeProvider? time = null)
    {
        _client = new ManagementService.ManagementServiceClient(calls);
        _identity = identity;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>
    /// This agent process's random id, sent with Login and Sync (instance_id): the server keeps one stream per key
    /// and refuses another process's login and stream while one is live. Empty: not sent.
    /// </summary>
    public string InstanceId { get; init; } = "";

    /// <summary>Fetches (once) and caches the server's public key.</summary>
    public async Task<WgKey> GetServerKeyAsync(CancellationToken cancellationToken)
    {
        if (_serverKey is { } known)
        {
            return known;
        }

        var reply = await _client.GetServerKeyAsync(new Empty(), cancellationToken: cancellationToken);
        if (reply.Key.Length != WgKey.Size)
        {
            throw new InvalidDataException("The management server sent a server key that is not 32 bytes.");
        }

        var key = new WgKey(reply.Key.Span);
        _serverKey = key;
        return key;
    }

    /// <summary>Registers this agent's key with a setup key; returns its overlay config and service addresses.</summary>
    public async Task<LoginResponse> RegisterAsync(string setupKey, PeerMeta meta, CancellationToken cancellationToken)
    {
        var request = await SealAsync(new RegisterRequest { SetupKey = setupKey, Meta = meta, TimestampUnix = _time.GetUtcNow().ToUnixTimeSeconds() }, cancellationToken);
        EncryptedMessage reply;
        try
        {
            reply = await _client.RegisterAsync(request, cancellationToken: cancellationToken);
        }
        catch (RpcException e) when (Refusal(request, e) is { } refused)
        {
            throw refused;
        }

        return await OpenAsync(reply, LoginResponse.Parser, cancellationToken);
    }

    /// <summary>Logs in an already registered key.</summary>
    public async Task<LoginResponse> LoginAsync(PeerMeta meta, CancellationToken cancellationToken)
    {
        var request = await SealAsync(new LoginRequest { Meta = meta, TimestampUnix = _time.GetUtcNow().ToUnixTimeSeconds(), InstanceId = InstanceId }, cancellationToken);
        EncryptedMessage reply;
        try
        {
            reply = await _client.LoginAsync(request, cancellationToken: cancellationToken);
        }
        catch (RpcException e) when (Refusal(request, e) is { } refused)
        {
            throw refused;
        }

        return await OpenAsync(reply, LoginResponse.Parser, cancellationToken);
    }

    /// <summary>
    /// The network map stream: the whole map first, then on every change a delta (previous_serial = the
    /// serial before it) or, when the server cannot send one, a whole map (see NetworkMapState).
    /// Ends when the server ends it (e.g. this peer was removed: <see cref="ManagementRefusedException"/> NotFound; another agent
    /// process with this key holds a stream: RpcException AlreadyExists). A response may instead carry only an identity_conflict.
    /// </summary>
    public async IAsyncEnumerable<SyncResponse> SyncAsync(PeerMeta meta, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var request = await SealAsync(new SyncRequest { Meta = meta, TimestampUnix = _time.GetUtcNow().ToUnixTimeSeconds(), InstanceId = InstanceId }, cancellationToken);
        using var call = _client.Sync(request, cancellationToken: cancellationToken);
        while (true)
        {
            bool more;
            try
            {
                more = await call.ResponseStream.MoveNext(cancellationToken);
            }
            catch (RpcException e) when (Refusal(request, e) is { } refused)
            {
                throw refused;
            }

            if (!more)
            {
                yield break;
            }

            yield return await OpenAsync(call.ResponseStream.Current, SyncResponse.Parser, cancellationToken);
        }
    }

    /// <summary>
    /// Publishes this agent's Rosenpass public key with its fingerprint and exchange address; the server checks the
    /// fingerprint (a mismatch is InvalidArgument) and announces it in every map.
    /// </summary>
    public async Task PublishRosenpassKeyAsync(ReadOnlyMemory<byte> publicKey, ReadOnlyMemory<byte> fingerprint, string address, CancellationToken cancellationToken)
    {
        var request = await SealAsync(
            new PublishRosenpassKeyRequest
            {
                PublicKey = ByteString.CopyFrom(publicKey.Span),
                Fingerprint = ByteString.CopyFrom(fingerprint.Span),
                Addr = address,
                TimestampUnix = _time.GetUtcNow().ToUnixTimeSeconds(),
            },
            cancellationToken);
        EncryptedMessage reply;
        try
        {
            reply = await _client.PublishRosenpassKeyAsync(request, cancellationToken: cancellationToken);
        }
        catch (RpcException e) when (Refusal(request, e) is { } refused)
        {
            throw refused;
        }

        await OpenAsync(reply, PublishRosenpassKeyResponse.Parser, cancellationToken);
    }

    /// <summary>The Rosenpass public key with <paramref name="fingerprint"/> as the server has it (unchecked: the caller checks); null when none.</summary>
    public async Task<byte[]?> GetRosenpassKeyAsync(ReadOnlyMemory<byte> fingerprint, CancellationToken cancellationToken)
    {
        var request = await SealAsync(new GetRosenpassKeyRequest { Fingerprint = ByteString.CopyFrom(fingerprint.Span), TimestampUnix = _time.GetUtcNow().ToUnixTimeSeconds() }, cancellationToken);
        EncryptedMessage reply;
        try
        {
            reply = await _client.GetRosenpassKeyAsync(request, cancellationToken: cancellationToken);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound && Refusal(request, e) is null)
        {
            return null;
        }
        catch (RpcException e) when (Refusal(request, e) is { } refused)
        {
            throw refused;
        }

        return (await OpenAsync(reply, GetRosenpassKeyResponse.Parser, cancellationToken)).PublicKey.ToByteArray();
    }

    // Only a refusal sealed by the server key this client verified replies with, for this very request, counts.
    private ManagementRefusedException? Refusal(EncryptedMessage request, RpcException e)
        => _serverKey is { } serverKey ? ManagementRefusal.TryOpen(_identity, serverKey, request.Body.Span, e) : null;

    private async Task<EncryptedMessage> SealAsync(IMessage message, CancellationToken cancellationToken)
    {
        var serverKey = await GetServerKeyAsync(cancellationToken);
        return new EncryptedMessage
        {
            WgPubKey = ByteString.CopyFrom(_identity.PublicKey.ToArray()),
            Body = ByteString.CopyFrom(Envelope.Seal(_identity, serverKey, Envelope.Purposes.Management, message.ToByteArray())),
        };
    }

    private async Task<T> OpenAsync<T>(EncryptedMessage reply, MessageParser<T> parser, CancellationToken cancellationToken)
        where T : IMessage<T>
    {
        var serverKey = await GetServerKeyAsync(cancellationToken);
        if (reply.WgPubKey.Length != WgKey.Size || new WgKey(reply.WgPubKey.Span) != serverKey
            || !Envelope.TryOpen(_identity, serverKey, Envelope.Purposes.Management, reply.Body.Span, out var plaintext))
        {
            throw new InvalidDataException("A management reply failed verification against the server key.");
        }

        try
        {
            return parser.ParseFrom(plaintext);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException("A management reply could not be decoded.", e);
        }
    }
}
