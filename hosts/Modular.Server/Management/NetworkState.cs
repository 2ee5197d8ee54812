using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Modular.Server.Store;

namespace Modular.Server.Management;

/// <summary>The account's peers, groups and policies at one network serial.</summary>
public sealed record NetworkSnapshot(ulong Serial, IReadOnlyList<PeerRecord> Peers, Networks.PolicySet? Policies = null)
{
    /// <summary>
    /// When it was read: peers count as expired when their login had lapsed at this time, in whole maps and
    /// in the change log alike (a lapse after it is the next snapshot's change).
    /// </summary>
    public DateTimeOffset TakenAt { get; init; } = DateTimeOffset.MinValue;

    /// <summary>Groups and policies; none (every peer isolated) when the snapshot was made without them.</summary>
    public Networks.PolicySet PolicySet => Policies ?? Networks.PolicySet.Empty;

    /// <summary>The account's nameserver groups (the map's DNS section).</summary>
    public IReadOnlyList<Networks.NameserverGroupRecord> NameserverGroups { get; init; } = [];

    private IReadOnlyList<(PeerRecord Peer, Modular.Control.Management.RemotePeer Remote)>? _remotePeers;
    private SyncEncoder? _encoder;

    /// <summary>The shared encoder for this snapshot's Sync responses (built on first use).</summary>
    public SyncEncoder Encoder(Config.AccountConfig account, DateTimeOffset now) => _encoder ??= SyncEncoder.Create(this, account, now);

    /// <summary>
    /// Every peer as others see it, built once for this snapshot and shared by every Sync stream
    /// (protobuf messages are only read when serialized), so a change costs one build, not one per stream.
    /// </summary>
    public IReadOnlyList<(PeerRecord Peer, Modular.Control.Management.RemotePeer Remote)> RemotePeers(Config.AccountConfig account)
        => _remotePeers ??= [.. Peers.Select(p => (p, NetworkMapBuilder.ToRemotePeer(p, account)))];
}

/// <summary>
/// Keeps the current <see cref="NetworkSnapshot"/> and tells every Sync stream when it changes. Changes
/// made in this process are announced at once (<see cref="RefreshAsync"/>); changes made by other
/// processes on the same store (the admin CLI, other instances) are found by polling the store's serial
/// every second. Login expiry also counts as a change: the serial is bumped when a peer's login lapses.
/// </summary>
public sealed class NetworkState : BackgroundService
{
    private readonly IStore _store;
    private readonly Config.AccountConfig _account;
    private readonly TimeProvider _time;
    private readonly ILogger<NetworkState> _logger;
    private readonly SemaphoreSlim _refreshLock = new(1, 1);
    private readonly Lock _subscribersLock = new();
    private readonly List<Channel<NetworkSnapshot>> _subscribers = [];
    private NetworkSnapshot? _current;
    private DateTimeOffset _lastCheck = DateTimeOffset.MinValue;

    public NetworkState(IStore store, Config.ServerConfig config, TimeProvider time, ILogger<NetworkState> logger)
    {
        _store = store;
        _account = config.Account;
        _time = time;
        _logger = logger;
    }

    /// <summary>Recent changes between published snapshots, from which Sync streams build deltas.</summary>
    public NetworkChangeLog Changes { get; } = new();

    /// <summary>How often the store is polled for changes made by other processes.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Peers in the snapshot held now (0 before the first load), without loading anything: for metrics.</summary>
    public int CurrentPeerCount => Volatile.Read(ref _current)?.Peers.Count ?? 0;

    /// <summary>The current snapshot, loading it if needed.</summary>
    public async Task<NetworkSnapshot> GetAsync(CancellationToken cancellationToken)
        => Volatile.Read(ref _current) ?? await RefreshAsync(cancellationToken);

    /// <summary>Reloads from the store if the serial moved, and tells subscribers.</summary>
    public async Task<NetworkSnapshot> RefreshAsync(CancellationToken cancellationToken)
    {
        await _refreshLock.WaitAsync(cancellationToken);
        try
        {
            var serial = await _store.GetNetworkSerialAsync(cancellationToken);
            var now = _time.GetUtcNow();
            var current = _current;
            var lastCheck = _lastCheck;
            _lastCheck = now;
            var lapsed = current is not null && current.Peers.Any(p => p.IsExpired(now) && !p.IsExpired(lastCheck));
            if (current is not null && current.Serial == serial && !lapsed)
            {
                return current;
            }

            if (lapsed && current!.Serial == serial)
            {
                // A login lapsed since the last look: that changes other peers' maps, so it gets a new serial.
                serial = await _store.BumpNetworkSerialAsync(cancellationToken);
            }

            var peers = await _store.ListPeersAsync(cancellationToken);
            var policies = new Networks.PolicySet(
                await _store.ListGroupsAsync(cancellationToken),
                await _store.ListPoliciesAsync(cancellationToken),
                await _store.ListResourcesAsync(cancellationToken));
            var snapshot = new NetworkSnapshot(serial, peers, policies) { TakenAt = now, NameserverGroups = await _store.ListNameserverGroupsAsync(cancellationToken) };
            // Recorded before publishing, so a stream woken by this snapshot finds its change in the log.
            Changes.Record(current, snapshot, _account);
            Volatile.Write(ref _current, snapshot);
            Publish(snapshot);
            return snapshot;
        }
        finally
        {
            _refreshLock.Release();
        }
    }

    /// <summary>A stream of snapshots for one Sync call; only the newest one waits. Dispose to leave.</summary>
    public Subscription Subscribe()
    {
        var channel = Channel.CreateBounded<NetworkSnapshot>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
        lock (_subscribersLock)
        {
            _subscribers.Add(channel);
        }

        return new Subscription(this, channel);
    }

    public int SubscriberCount
    {
        get
        {
            lock (_subscribersLock)
            {
                return _subscribers.Count;
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(PollInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await RefreshAsync(stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _logger.LogWarning(e, "Could not read the store for network changes; retrying");
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopped, or disposed without a stop when another component failed to start: not a failure of ours.
        }
    }

    private void Publish(NetworkSnapshot snapshot)
    {
        lock (_subscribersLock)
        {
            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryWrite(snapshot);
            }
        }
    }

    private void Remove(Channel<NetworkSnapshot> channel)
    {
        lock (_subscribersLock)
        {
            _subscribers.Remove(channel);
        }
    }

    public override void Dispose()
    {
        _refreshLock.Dispose();
        base.Dispose();
    }

    public sealed class Subscription : IDisposable
    {
        private readonly NetworkState _owner;
        private readonly Channel<NetworkSnapshot> _channel;

        internal Subscription(NetworkState owner, Channel<NetworkSnapshot> channel)
        {
            _owner = owner;
            _channel = channel;
        }

        public ChannelReader<NetworkSnapshot> Reader => _channel.Reader;

        public void Dispose() => _owner.Remove(_channel);
    }
}
