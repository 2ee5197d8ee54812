using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Control.Rosenpass;
using Modular.Server.Config;
using Modular.Server.Hosting;
using Modular.Server.Store;

namespace Modular.Server.Management;

/// <summary>
/// Management over gRPC. Every request is an <see cref="EncryptedMessage"/> the agent sealed with its
/// WireGuard key to the server key: opening it proves the agent holds the private half of wg_pub_key.
/// Malformed input is InvalidArgument. A refusal (an unusable setup key, an unknown, expired or removed peer) is
/// PermissionDenied or NotFound with the same error sealed to the agent for that request (<see cref="ManagementRefusal"/>):
/// agents drop their tunnels only on a refusal that proves this server's key, never on a bare status.
/// </summary>
public sealed class ManagementGrpcService : ManagementService.ManagementServiceBase
{
    /// <summary>Requests whose timestamp is further than this from the server clock are refused (replay window).</summary>
    public static readonly TimeSpan MaxClockSkew = TimeSpan.FromMinutes(5);

    /// <summary>The largest request of every call but the two Rosenpass key calls (RosenpassKeys.MaxMessageSize).</summary>
    public const int MaxMessageSize = 1 << 20;

    private readonly IStore _store;
    private readonly ServerSecrets _secrets;
    private readonly ServerConfig _config;
    private readonly NetworkState _network;
    private readonly ServiceAddressResolver _addresses;
    private readonly TimeProvider _time;
    private readonly ILogger<ManagementGrpcService> _logger;
    private readonly MetadataChangeLimiter _metadata;
    private readonly PeerSessions<ManagementGrpcService> _sessions;

    private readonly Metrics.ServerCounters _counters;

    public ManagementGrpcService(
        IStore store,
        ServerSecrets secrets,
        ServerConfig config,
        NetworkState network,
        ServiceAddressResolver addresses,
        TimeProvider time,
        ILogger<ManagementGrpcService> logger,
        MetadataChangeLimiter metadata,
        PeerSessions<ManagementGrpcService> sessions,
        Metrics.ServerCounters counters)
    {
        _counters = counters;
        _metadata = metadata;
        _sessions = sessions;
        _store = store;
        _secrets = secrets;
        _config = config;
        _network = network;
        _addresses = addresses;
        _time = time;
        _logger = logger;
    }

    public override Task<ServerKeyResponse> GetServerKey(Empty request, ServerCallContext context)
        => Task.FromResult(new ServerKeyResponse { Key = ByteString.CopyFrom(_secrets.ServerKey.PublicKey.ToArray()) });

    public override async Task<EncryptedMessage> Register(EncryptedMessage request, ServerCallContext context)
    {
        var (peerKey, body) = Open(request, RegisterRequest.Parser);
        CheckTimestamp(body.TimestampUnix);
        if (string.IsNullOrWhiteSpace(body.SetupKey))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "setup_key is empty"));
        }

        PeerRecord peer;
        try
        {
            var expires = _config.Account.PeerLoginExpiration > TimeSpan.Zero ? _time.GetUtcNow() + _config.Account.PeerLoginExpiration : (DateTimeOffset?)null;
            peer = await _store.RegisterPeerAsync(body.SetupKey, peerKey, ToMetadata(body.Meta), expires, context.CancellationToken);
        }
        catch (SetupKeyRejectedException e)
        {
            // The key itself is a secret: log only that one was refused and why.
            _logger.LogWarning("Registration of {Peer} refused: {Reason}", peerKey.ToShortString(), e.Message);
            throw Refuse(peerKey, request, StatusCode.PermissionDenied, e.Message);
        }
        catch (InvalidOperationException e)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, e.Message));
        }

        _logger.LogInformation("Registered peer {Hostname} {Peer} at {Address}", peer.Hostname, peerKey.ToShortString(), peer.OverlayAddress);
        var snapshot = await _network.RefreshAsync(context.CancellationToken);
        return Seal(peerKey, LoginReply(peer, snapshot.Serial, context));
    }

    public override async Task<EncryptedMessage> Login(EncryptedMessage request, ServerCallContext context)
    {
        var (peerKey, body) = Open(request, LoginRequest.Parser);
        CheckTimestamp(body.TimestampUnix);
        // A copy of a connected agent is refused before it can change the connected one's metadata.
        _sessions.RefuseIfHeldByAnother(peerKey, body.InstanceId, context.Peer);
        var peer = await RequireLivePeerAsync(peerKey, request, body.Meta, context.CancellationToken);
        var snapshot = await _network.RefreshAsync(context.CancellationToken);
        return Seal(peerKey, LoginReply(peer, snapshot.Serial, context));
    }

    public override async Task Sync(EncryptedMessage request, IServerStreamWriter<EncryptedMessage> responseStream, ServerCallContext context)
    {
        var (peerKey, body) = Open(request, SyncRequest.Parser);
        CheckTimestamp(body.TimestampUnix);
        _sessions.RefuseIfHeldByAnother(peerKey, body.InstanceId, context.Peer);
        await RequireLivePeerAsync(peerKey, request, body.Meta, context.CancellationToken);
        // One stream per key: the same agent's newer stream replaces this one, another agent's is refused (PeerSessions).
        using var session = _sessions.Open(peerKey, body.InstanceId, context.Peer, context.CancellationToken);
        var ct = session.Token;
        using var subscription = _network.Subscribe();
        var snapshot = await _network.RefreshAsync(ct);
        ulong sent = 0;
        byte[] sentSections = [];
        Task<bool>? nextSnapshot = null;
        Task<bool>? nextConflict = null;
        _logger.LogInformation("Sync stream opened by {Peer}", peerKey.ToShortString());
        // Relay credentials live ServiceAddressResolver.RelayTokenLifetime; a quiet network sends no map for hours,
        // so the stream sends fresh ones on its own at half-life (a reply with only services, which agents apply
        // and otherwise ignore), and live relay bindings take them before the old ones expire.
        var refreshAt = DateTimeOffset.MaxValue;
        try
        {
            while (true)
            {
                if (snapshot.Serial <= sent && _time.GetUtcNow() >= refreshAt)
                {
                    var fresh = new SyncResponse { Services = _addresses.Resolve(context.GetHttpContext(), peerKey) };
                    await responseStream.WriteAsync(SealBytes(peerKey, fresh.ToByteArray()), ct);
                    _counters.MapPushed();
                    refreshAt = _time.GetUtcNow() + ServiceAddressResolver.RelayTokenRefresh;
                }

                if (snapshot.Serial > sent)
                {
                    var self = snapshot.Peers.FirstOrDefault(p => p.PublicKey == peerKey);
                    if (self is null)
                    {
                        throw Refuse(peerKey, request, StatusCode.NotFound, "this peer was removed from the network");
                    }

                    if (self.IsExpired(_time.GetUtcNow()))
                    {
                        throw Refuse(peerKey, request, StatusCode.PermissionDenied, ExpiredDetail);
                    }

                    var services = _addresses.Resolve(context.GetHttpContext(), peerKey);
                    var sections = NetworkMapBuilder.BuildHeader(snapshot, self, _config.Account);
                    var sectionsBytes = SectionBytes(sections);
                    var plaintext = sent == 0 ? null : SyncDeltas.TryEncode(_network.Changes, sent, snapshot, peerKey, sections, sectionsBytes.AsSpan().SequenceEqual(sentSections), services);
                    plaintext ??= snapshot.Encoder(_config.Account, snapshot.TakenAt).Encode(snapshot, self, _config.Account, services);
                    await responseStream.WriteAsync(SealBytes(peerKey, plaintext), ct);
                    _counters.MapPushed();
                    sent = snapshot.Serial;
                    sentSections = sectionsBytes;
                    refreshAt = _time.GetUtcNow() + ServiceAddressResolver.RelayTokenRefresh;
                }

                // The next snapshot, a refused second agent with this key, or the time to refresh the relay
                // credentials, whichever comes first; a wait left pending is kept for the next round.
                nextSnapshot ??= subscription.Reader.WaitToReadAsync(ct).AsTask();
                nextConflict ??= session.Conflicts.WaitToReadAsync(ct).AsTask();
                using (var wait = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    var due = refreshAt == DateTimeOffset.MaxValue ? ServiceAddressResolver.RelayTokenRefresh : refreshAt - _time.GetUtcNow();
                    var refresh = Task.Delay(due > TimeSpan.Zero ? due : TimeSpan.Zero, _time, wait.Token);
                    if (await Task.WhenAny(nextSnapshot, nextConflict, refresh) == refresh)
                    {
                        await refresh; // throws when the agent went away
                        continue;
                    }

                    await wait.CancelAsync();
                }

                if (nextConflict.IsCompleted)
                {
                    await nextConflict;
                    nextConflict = null;
                    while (session.Conflicts.TryRead(out var conflict))
                    {
                        _logger.LogWarning("A second agent with the identity of {Peer} was refused ({Remote}); told the connected one", peerKey.ToShortString(), conflict.RemoteAddress);
                        await responseStream.WriteAsync(Seal(peerKey, new SyncResponse { IdentityConflict = conflict }), ct);
                    }
                }

                if (nextSnapshot.IsCompleted)
                {
                    await nextSnapshot;
                    nextSnapshot = null;
                    if (subscription.Reader.TryRead(out var newer))
                    {
                        snapshot = newer;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The agent went away, or opened a newer stream.
        }
        finally
        {
            _logger.LogInformation("Sync stream closed for {Peer}", peerKey.ToShortString());
        }

        if (session.Superseded && !context.CancellationToken.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.Aborted, "a newer Sync stream of this agent replaced this one"));
        }
    }

    // Everything in a peer's map but the peers and the serial: a delta carries it only when these bytes changed.
    private static byte[] SectionBytes(NetworkMap sections)
    {
        var serial = sections.Serial;
        sections.Serial = 0;
        var bytes = sections.ToByteArray();
        sections.Serial = serial;
        return bytes;
    }

    private const string ExpiredDetail = "this peer's login has expired; register again with a setup key";

    private async Task<PeerRecord> RequireLivePeerAsync(WgKey peerKey, EncryptedMessage request, PeerMeta? meta, CancellationToken cancellationToken)
    {
        var peer = await _store.UpdatePeerAsync(peerKey, null, cancellationToken)
            ?? throw Refuse(peerKey, request, StatusCode.PermissionDenied, "this key is not registered; register with a setup key first");
        if (peer.IsExpired(_time.GetUtcNow()))
        {
            throw Refuse(peerKey, request, StatusCode.PermissionDenied, ExpiredDetail);
        }

        // Changed metadata changes everyone's map: stored at once within the peer's rate, else it waits (never lost).
        return meta is null ? peer : await _metadata.ApplyAsync(peer, ToMetadata(meta), cancellationToken);
    }

    /// <summary>A refusal agents can trust: the status, and the same error sealed to <paramref name="peer"/> for <paramref name="request"/>.</summary>
    private RpcException Refuse(WgKey peer, EncryptedMessage request, StatusCode code, string detail)
        => ManagementRefusal.Create(_secrets.ServerKey, peer, request.Body.Span, code, detail);

    /// <summary>Stores the caller's Rosenpass public key once the fingerprint proves it (sealed: only the peer itself publishes its key).</summary>
    public override async Task<EncryptedMessage> PublishRosenpassKey(EncryptedMessage request, ServerCallContext context)
    {
        var (peerKey, body) = Open(request, PublishRosenpassKeyRequest.Parser, RosenpassKeys.MaxMessageSize);
        CheckTimestamp(body.TimestampUnix);
        if (body.PublicKey.Length is 0 or > RosenpassKeys.MaxPublicKeySize)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"public_key must be 1 to {RosenpassKeys.MaxPublicKeySize} bytes, got {body.PublicKey.Length}"));
        }

        if (!RosenpassKeys.Matches(body.PublicKey.Span, body.Fingerprint.Span))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "fingerprint is not the BLAKE2s-256 of public_key"));
        }

        var peer = await RequireLivePeerAsync(peerKey, request, null, context.CancellationToken);
        try
        {
            await _store.PutRosenpassKeyAsync(peer.Id, body.Fingerprint.ToByteArray(), body.PublicKey.ToByteArray(), context.CancellationToken);
        }
        catch (InvalidOperationException e)
        {
            throw new RpcException(new Status(StatusCode.AlreadyExists, e.Message));
        }

        // Announced to everyone like any metadata change (the agent's later logins send the same RosenpassConfig).
        await _metadata.ApplyAsync(peer, new PeerMetadata(peer.Hostname, peer.AgentVersion, peer.Os, peer.Features, body.Fingerprint.ToByteArray(), Truncate(body.Addr, 128)), context.CancellationToken);
        // Pushed now, not at the next store poll: until its peers see the fingerprint, a strict one refuses this agent.
        await _network.RefreshAsync(context.CancellationToken);
        _logger.LogInformation("Peer {Peer} published its Rosenpass key {Fingerprint}", peerKey.ToShortString(), Convert.ToHexStringLower(body.Fingerprint.Span)[..16]);
        return Seal(peerKey, new PublishRosenpassKeyResponse());
    }

    /// <summary>A Rosenpass public key by fingerprint, for any live peer (keys are public; the fingerprint names one).</summary>
    public override async Task<EncryptedMessage> GetRosenpassKey(EncryptedMessage request, ServerCallContext context)
    {
        var (peerKey, body) = Open(request, GetRosenpassKeyRequest.Parser);
        CheckTimestamp(body.TimestampUnix);
        if (body.Fingerprint.Length != RosenpassKeys.FingerprintSize)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"fingerprint must be {RosenpassKeys.FingerprintSize} bytes"));
        }

        await RequireLivePeerAsync(peerKey, request, null, context.CancellationToken);
        var key = await _store.GetRosenpassKeyAsync(body.Fingerprint.ToByteArray(), context.CancellationToken)
            ?? throw new RpcException(new Status(StatusCode.NotFound, "no peer published a Rosenpass key with this fingerprint"));
        return Seal(peerKey, new GetRosenpassKeyResponse { PublicKey = UnsafeByteOperations.UnsafeWrap(key) });
    }

    private LoginResponse LoginReply(PeerRecord peer, ulong serial, ServerCallContext context) => new()
    {
        PeerConfig = NetworkMapBuilder.PeerConfigFor(peer, _config.Account),
        Services = _addresses.Resolve(context.GetHttpContext(), peer.PublicKey),
        Serial = serial,
    };

    private (WgKey Peer, T Body) Open<T>(EncryptedMessage request, MessageParser<T> parser, int maxSize = MaxMessageSize)
        where T : IMessage<T>
    {
        if (request.CalculateSize() > maxSize)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, $"the request is larger than {maxSize} bytes"));
        }

        if (request.WgPubKey.Length != WgKey.Size)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"wg_pub_key must be {WgKey.Size} bytes, got {request.WgPubKey.Length}"));
        }

        var peerKey = new WgKey(request.WgPubKey.Span);
        if (!Envelope.TryOpen(_secrets.ServerKey, peerKey, Envelope.Purposes.Management, request.Body.Span, out var plaintext))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the message body does not open with wg_pub_key and the server key (wrong key, tampered or truncated)"));
        }

        try
        {
            return (peerKey, parser.ParseFrom(plaintext));
        }
        catch (InvalidProtocolBufferException)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the message body is not a valid {typeof(T).Name}"));
        }
    }

    private void CheckTimestamp(long unixSeconds)
    {
        var skew = _time.GetUtcNow() - DateTimeOffset.FromUnixTimeSeconds(Math.Clamp(unixSeconds, 0, 253402300799));
        if (skew.Duration() > MaxClockSkew)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the request timestamp is too far from the server's clock (check the agent's time)"));
        }
    }

    private EncryptedMessage Seal(WgKey peer, IMessage reply) => SealBytes(peer, reply.ToByteArray());

    private EncryptedMessage SealBytes(WgKey peer, byte[] plaintext) => new()
    {
        WgPubKey = ByteString.CopyFrom(_secrets.ServerKey.PublicKey.ToArray()),
        Body = UnsafeByteOperations.UnsafeWrap(Envelope.Seal(_secrets.ServerKey, peer, Envelope.Purposes.Management, plaintext)),
    };

    private static PeerMetadata ToMetadata(PeerMeta? meta)
    {
        meta ??= new PeerMeta();
        var fingerprint = meta.Rosenpass?.PubKeyFingerprint.ToByteArray() ?? [];
        if (fingerprint.Length is not (0 or 32))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "rosenpass.pub_key_fingerprint must be 32 bytes (or empty)"));
        }

        return new PeerMetadata(
            Hostname: meta.Hostname.Length > 0 ? meta.Hostname : "peer",
            AgentVersion: Truncate(meta.AgentVersion, 64),
            Os: Truncate(meta.Os, 64),
            Features: [.. meta.Features.Take(32).Select(f => Truncate(f.Replace(",", "", StringComparison.Ordinal), 64))],
            RosenpassFingerprint: fingerprint,
            RosenpassAddr: Truncate(meta.Rosenpass?.Addr ?? "", 128));
    }

    private static string Truncate(string value, int max) => value.Length <= max ? value : value[..max];
}
