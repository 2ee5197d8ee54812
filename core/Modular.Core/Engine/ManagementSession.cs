using System.Runtime.CompilerServices;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// This agent's session with management: login (URLs in order; register with the setup key when this identity never
/// registered, or registered with another key), the pinned server key (<see cref="ServerKeyPin"/>), the registration marker, and the Sync stream whose maps go to the <see cref="MapApplier"/>. Keeps what
/// management announced (its URL, the service addresses, its key) for the signal and STUN loops, the relay and the
/// exit node's control-host exceptions, and owns management's line in status.
/// <para>
/// No locks: one login or Sync runs at a time (the engine's run loop); what other loops read is published through
/// volatile fields, each value whole.
/// </para>
/// </summary>
internal sealed class ManagementSession
{
    // Immutable after construction.
    private readonly EngineOptions _options;
    private readonly AgentConfig _config;
    private readonly X25519KeyPair _identity;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Func<EngineParts?> _parts;
    private readonly EngineSeams _seams;
    private readonly NetworkMapState _map = new();

    // Written by login and Sync (the run loop), read by any loop.
    private volatile ServiceAddresses? _services;
    private volatile Uri? _url;
    // The management URL whose failure is reported (the last one LoginAsync tried), for the one-line message.
    private volatile Uri? _lastLoginUrl;
    // The key management announced (GetServerKey); signal must prove the same key, so an impersonating
    // signal server (DNS, a wrong public_url) is refused instead of trusted. Boxed for atomic publication.
    private volatile StrongBox<WgKey>? _serverKey;
    // The client of the latest login (its channel may since have closed: a call then fails and is retried by its caller).
    private volatile ManagementClient? _client;
    // This agent's published Rosenpass key (fingerprint, address): sent in every login's and Sync's metadata from then on.
    private volatile Modular.Control.Management.RosenpassConfig? _rosenpass;

    public ManagementSession(EngineOptions options, X25519KeyPair identity, StatusRecorder recorder, ILogger logger, TimeProvider time, Func<EngineParts?> parts, EngineSeams? seams = null)
    {
        _seams = seams ?? EngineSeams.Host;
        Pin = new ServerKeyPin(options.Config.StateDir);
        _options = options;
        _config = options.Config;
        _identity = identity;
        _recorder = recorder;
        _logger = logger;
        _time = time;
        _parts = parts;
        _marker = new RegistrationMarker(_config.StateDir);
        Refused = new RefusedPeerBackoff(logger, time);
    }

    /// <summary>Management's key as pinned on first contact (state_dir/server.pub).</summary>
    public ServerKeyPin Pin { get; }

    /// <summary>Whether (and how long) management refuses this peer; signal reads it to retry quietly.</summary>
    public RefusedPeerBackoff Refused { get; }

    /// <summary>
    /// This process's random id for its Sync and signal streams (never stored: a copy of the state_dir is another
    /// instance), so the server can tell a reconnect of this agent from a second agent with the same identity.
    /// </summary>
    public string InstanceId { get; } = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8)).ToLowerInvariant();

    /// <summary>The addresses of signal, relay and STUN from the latest login or Sync update; null before the first login.</summary>
    public ServiceAddresses? Services => _services;

    /// <summary>The client of the latest login, for calls besides login and Sync (the Rosenpass key directory); null before one.</summary>
    public ManagementClient? Client => _client;

    /// <summary>
    /// What this agent announces as its Rosenpass key and exchange address (set once the key is published); every later
    /// login and Sync sends it, so the server keeps it in every map.
    /// </summary>
    public Modular.Control.Management.RosenpassConfig? Rosenpass
    {
        get => _rosenpass;
        set => _rosenpass = value;
    }

    /// <summary>The key management proved; signal must prove the same one.</summary>
    public WgKey? ServerKey => _serverKey?.Value;

    /// <summary>The management URL of the latest successful login; null before it.</summary>
    public Uri? Url => _url;

    /// <summary>The management URL whose failure is reported (the last one a login tried).</summary>
    public Uri? LastLoginUrl => _lastLoginUrl;

    // Registration happens once per identity and setup key: a peer the operator removed (or whose login expired) must
    // not silently come back by re-using a reusable setup key; it keeps asking and says why in status. A new key re-adds it.
    private readonly RegistrationMarker _marker;

    /// <summary>Logs in at the first management URL that answers; the caller disposes the channel (none when a test's seam answers).</summary>
    public async Task<(GrpcChannel? Channel, ManagementClient Client, LoginResponse Login)> LoginAsync(CancellationToken cancellationToken)
    {
        var meta = Meta();
        Exception? last = null;
        foreach (var url in _config.ManagementUrls)
        {
            var channel = _seams.ManagementCalls is null ? ControlChannel.Create(url.ToString(), _config.TlsCa) : null;
            try
            {
                var client = channel is null ? new ManagementClient(_seams.ManagementCalls!(url), _identity, _time) { InstanceId = InstanceId } : new ManagementClient(channel, _identity, _time) { InstanceId = InstanceId };
                WarnIfPlaintext(url, "Management");

                // The key comes unauthenticated: once pinned, another one is refused before anything is sent to it.
                var serverKey = await client.GetServerKeyAsync(cancellationToken);
                Pin.Check(serverKey, url);
                LoginResponse login;
                var registered = false;
                try
                {
                    login = await client.LoginAsync(meta, cancellationToken);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.PermissionDenied && _config.SetupKey.Length > 0 && MayRegister())
                {
                    try
                    {
                        login = await client.RegisterAsync(_config.SetupKey, meta, cancellationToken);
                        registered = true;
                        _logger.LogInformation("Registered with {Management} using the setup key", url);
                    }
                    catch (ManagementRefusedException refused)
                    {
                        SetStatus(false, $"setup key refused: {refused.Status.Detail}");
                        throw new EngineFatalException($"management at {url} refused the setup key: {refused.Status.Detail}", refused);
                    }
                }
                catch (ManagementRefusedException e) when (e.StatusCode == StatusCode.PermissionDenied && !File.Exists(_marker.Path))
                {
                    SetStatus(false, $"not registered and no setup_key: {e.Status.Detail}");
                    throw new EngineFatalException($"management at {url} does not know this agent ({e.Status.Detail}) and no setup_key is configured", e);
                }

                _marker.Record(url, _config.SetupKey, registered);
                _serverKey = new StrongBox<WgKey>(serverKey);
                if (Pin.PinIfNone(serverKey))
                {
                    // The reply opened with this key: the server holds it. From now on no other key is accepted.
                    _logger.LogInformation("Pinned management's key {Key} in {Path} (trust on first use; delete the file to accept a new server key)", serverKey.ToBase64(), Pin.Path);
                }

                _url = url;
                _client = client;
                _services = login.Services;
                _parts()?.Relay.Apply(login.Services);
                _recorder.SetOverlayIp(MapApplier.AddressOnly(login.PeerConfig.Address));
                SetStatus(true, null);
                _logger.LogInformation("Logged in to {Management}: overlay address {Address}", url, login.PeerConfig.Address);
                return (channel, client, login);
            }
            catch (Exception e) when (e is not EngineFatalException and not OperationCanceledException)
            {
                channel?.Dispose();
                last = e;
                _lastLoginUrl = url;
                _logger.LogDebug("Management {Url}: {Problem}", url, ConnectionProblem.Describe(e, url));
            }
            catch
            {
                channel?.Dispose();
                throw;
            }
        }

        throw last ?? new InvalidOperationException("no management URL configured");
    }

    // Plaintext URLs already warned about (once each, for the life of the engine).
    private readonly HashSet<string> _plaintextWarned = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Warns once per URL when <paramref name="url"/> is plaintext http to another machine: bodies stay sealed, but the
    /// path sees metadata and can cut or delay every call (loopback, as in tests and on the server's own host, is fine).
    /// </summary>
    public void WarnIfPlaintext(Uri url, string service)
    {
        if (url.Scheme != Uri.UriSchemeHttp || url.IsLoopback)
        {
            return;
        }

        lock (_plaintextWarned)
        {
            if (!_plaintextWarned.Add(url.GetLeftPart(UriPartial.Authority)))
            {
                return;
            }
        }

        _logger.LogWarning("{Service} {Url} is plaintext http to another host: anyone on the path sees which peers talk to it and can cut or delay the connection (bodies stay sealed). Use https:// unless the path is trusted", service, url);
    }

    /// <summary>
    /// Management does not know this peer and the config holds a setup key: register when this identity never did, or
    /// did with another key (the operator re-adds a removed peer by handing it a new key; said once, as it happens).
    /// The same key again does not: a removed peer must not come back by itself (see <see cref="RegistrationMarker"/>).
    /// </summary>
    private bool MayRegister()
    {
        switch (_marker.Check(_config.SetupKey))
        {
            case RegistrationVerdict.FirstTime:
                return true;
            case RegistrationVerdict.NewKey:
                _logger.LogWarning("Management does not know this peer (removed?) and setup_key differs from the key it registered with: registering again with the new key");
                return true;
            default:
                return false;
        }
    }

    /// <summary>Follows the Sync stream until the server ends it, putting every map in force through <paramref name="applier"/>.</summary>
    public async Task SyncAsync(ManagementClient management, MapApplier applier, CancellationToken cancellationToken)
    {
        // A delta that does not follow the serial held means something was missed: start a new stream,
        // which begins with a whole map, rather than diverge silently from the server.
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
        while (await SyncStreamAsync(management, applier, cancellationToken))
        {
            _logger.LogWarning("Network map delta did not follow serial {Serial}; resynchronizing", _map.Serial);
            // A growing pause, so a server that keeps sending broken chains cannot make the agent reconnect in a hot loop.
            await Task.Delay(backoff.Next(AgentEngine.MaxBackoff), _time, cancellationToken);
        }
    }

    /// <summary>Reads one Sync stream; true when it was abandoned for a resync, false when the server ended it.</summary>
    private async Task<bool> SyncStreamAsync(ManagementClient management, MapApplier applier, CancellationToken cancellationToken)
    {
        _map.Reset();
        await foreach (var update in management.SyncAsync(Meta(), cancellationToken))
        {
            if (update.Services is { } services)
            {
                _services = services;
                _parts()?.Relay.Apply(services);
            }

            if (update.IdentityConflict is { } conflict)
            {
                // Another agent with this key (a copy of this machine's state_dir?) was refused: this one stays
                // connected, and says so until the stream is opened again.
                _logger.LogWarning("Management: {Detail}", conflict.Detail);
                SetStatus(true, conflict.Detail);
                continue;
            }

            var previous = _map.Serial;
            if (previous == 0)
            {
                SetStatus(true, null);
            }

            switch (_map.Apply(update))
            {
                case MapUpdateResult.ResyncNeeded:
                    return true;
                case MapUpdateResult.Ignored:
                    continue;
            }

            var started = _time.GetTimestamp();
            var map = _map.ToMap();
            var (added, updated, removed) = await applier.ApplyMapAsync(map, cancellationToken);
            _logger.LogInformation("Network map {Serial} ({Kind} from {Previous}): {Total} peers (+{Added} ~{Updated} -{Removed}) applied in {Ms:F1} ms",
                map.Serial, update.NetworkMap is null ? "delta" : "whole map", previous, map.RemotePeers.Count, added, updated, removed, _time.GetElapsedTime(started).TotalMilliseconds);
        }

        return false;
    }

    /// <summary>Management's line in status: the URL in use (else the first configured), whether connected, and why not.</summary>
    public void SetStatus(bool connected, string? error)
        => _recorder.SetManagement(new ServiceStatus((_url ?? (_config.ManagementUrls.Count > 0 ? _config.ManagementUrls[0] : null))?.ToString() ?? "", connected, error));

    /// <summary>Status when the engine stops.</summary>
    public void SetStopped() => _recorder.SetManagement(new ServiceStatus(_url?.ToString() ?? "", false, "stopped"));

    /// <summary>The control plane's hosts (management, signal, relay, STUN): an exit node must not carry their traffic.</summary>
    public IReadOnlyCollection<string> ControlHosts()
    {
        var hosts = new List<string>();
        if (_url is { } management)
        {
            hosts.Add(management.IdnHost);
        }

        var services = _services;
        if (services is not null)
        {
            if (Uri.TryCreate(services.SignalUrl, UriKind.Absolute, out var signal))
            {
                hosts.Add(signal.IdnHost);
            }

            hosts.Add(HostOf(services.RelayAddress));
            hosts.Add(HostOf(services.StunAddress));
        }

        return hosts;
    }

    /// <summary>"host:port" or "[v6]:port" to the host.</summary>
    private static string HostOf(string hostAndPort)
    {
        if (hostAndPort.StartsWith('['))
        {
            var close = hostAndPort.IndexOf(']', StringComparison.Ordinal);
            return close > 0 ? hostAndPort[1..close] : "";
        }

        var colon = hostAndPort.LastIndexOf(':');
        return colon > 0 ? hostAndPort[..colon] : hostAndPort;
    }

    private PeerMeta Meta()
    {
        var meta = new PeerMeta { Hostname = _options.Hostname, AgentVersion = _options.AgentVersion, Os = "linux", Kernel = Environment.OSVersion.VersionString };
        if (_config.Connection.ForceRelay)
        {
            meta.Features.Add("force_relay");
        }

        if (_rosenpass is { } rosenpass)
        {
            meta.Rosenpass = rosenpass.Clone();
        }

        return meta;
    }
}
