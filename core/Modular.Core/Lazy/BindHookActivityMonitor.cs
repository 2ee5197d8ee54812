using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>
/// The activity monitor of the in-process WireGuard: each watched peer gets a virtual endpoint
/// (127.128.x.y:<see cref="StandInPort"/>) claimed on the device's Bind hook, so WireGuard's datagrams for it
/// go straight to the listener on WireGuard's own send path. No socket, and nothing reaches the network.
/// The listener runs on WireGuard's thread (TUN reader or timer): it should note the activity and hand the work
/// of connecting off; whatever it throws is caught and logged once per peer.
/// </summary>
public sealed class BindHookActivityMonitor : IActivityMonitor
{
    /// <summary>
    /// The port of every stand-in. 9 is the discard service, which is what a stand-in is; it is outside the
    /// range the bind proxy's virtual endpoints use (1024 and up), so the two never claim the same endpoint.
    /// </summary>
    public const int StandInPort = 9;

    // An endpoint claimed by someone else is skipped; this many in a row means something is badly wrong.
    private const int MaxClaimAttempts = 16;

    private readonly IWgBindHook _hook;
    private readonly ILogger _logger;
    private readonly ActivityReporter _reporter;
    private readonly Dictionary<WgKey, HookedStandIn> _watched = [];
    private readonly StandInAddressPool _addresses = new();
    private readonly Lock _lock = new();
    private bool _disposed;

    public BindHookActivityMonitor(IWgBindHook hook, IActivityListener listener, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(hook);
        ArgumentNullException.ThrowIfNull(listener);
        ArgumentNullException.ThrowIfNull(logger);
        _hook = hook;
        _logger = logger;
        _reporter = new ActivityReporter(listener, logger);
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _watched.Count;
            }
        }
    }

    /// <summary>Datagrams handed to the listener (including those it failed on).</summary>
    public long DatagramsReported => _reporter.Reported;

    /// <summary>Datagrams dropped: they reached a stand-in after its peer was unwatched.</summary>
    public long DatagramsDropped => _reporter.Dropped;

    /// <summary>Datagrams the listener threw on (each peer's first failure is logged).</summary>
    public long ListenerFailures => _reporter.ListenerFailures;

    public IPEndPoint Watch(WgKey peer)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_watched.TryGetValue(peer, out var existing))
            {
                return existing.ToEndPoint();
            }

            for (var attempt = 0; attempt < MaxClaimAttempts; attempt++)
            {
                var address = _addresses.Rent();
                var standIn = new HookedStandIn(peer, address, _reporter);
                var endpoint = standIn.ToEndPoint();
                try
                {
                    standIn.Claim = _hook.ClaimEndpoint(endpoint, standIn);
                }
                catch (InvalidOperationException)
                {
                    // Claimed by another user of the hook: leave the address out of the pool for good.
                    _logger.LogWarning("Lazy: stand-in {Endpoint} is already claimed on the Bind hook; skipping it", endpoint);
                    continue;
                }

                _watched.Add(peer, standIn);
                return endpoint;
            }

            throw new InvalidOperationException($"No free stand-in endpoint for peer {peer.ToShortString()} after {MaxClaimAttempts} attempts.");
        }
    }

    public void Unwatch(WgKey peer)
    {
        lock (_lock)
        {
            if (_disposed || !_watched.Remove(peer, out var standIn))
            {
                return;
            }

            Release(standIn);
            _addresses.Return(standIn.Address);
        }
    }

    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return ValueTask.CompletedTask;
            }

            _disposed = true;
            foreach (var standIn in _watched.Values)
            {
                Release(standIn);
            }

            _watched.Clear();
        }

        return ValueTask.CompletedTask;
    }

    private static void Release(HookedStandIn standIn)
    {
        // Deactivate first: WireGuard may be inside the sink right now; what it sends from here on is dropped.
        standIn.Deactivate();
        standIn.Claim?.Dispose();
    }

    /// <summary>A stand-in that is also the Bind hook's sink for its endpoint.</summary>
    private sealed class HookedStandIn(WgKey peer, uint address, ActivityReporter reporter)
        : StandIn(peer, address, StandInPort), IDatagramSink
    {
        public IDisposable? Claim { get; set; }

        public void Send(ReadOnlySpan<byte> datagram) => reporter.Report(this, datagram);
    }
}
