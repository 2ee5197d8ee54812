using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>
/// The activity monitor for WireGuard outside this process (the kernel module or a wireguard-go we run): ONE UDP
/// socket stands in for every idle peer. Each watched peer gets its own address of 127.128.0.0/9 (all of 127/8 is
/// local on lo), all on the socket's port, so the destination address of a datagram, read with IP_PKTINFO, names
/// the peer. The socket is bound to 0.0.0.0 and to the device lo (SO_BINDTODEVICE): datagrams from other
/// hosts never reach it; those that come from this host but not from a 127/8 source, or go to an address
/// nobody watches, are dropped and counted.
/// Create it in the network namespace of the WireGuard interface it serves: the socket lives where it was made.
/// </summary>
public sealed class LoopbackActivityMonitor : IActivityMonitor
{
    // A burst of foreign datagrams must not keep the loop from noticing it was stopped.
    private const int MaxDatagramsPerWakeup = 1024;
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan ErrorBackoff = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan MaxErrorBackoff = TimeSpan.FromSeconds(5);
    private readonly RetryBackoff _errorBackoff = new(ErrorBackoff); // the receive loop's alone

    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ActivityReporter _reporter;
    private readonly Socket _socket;
    private readonly LoopbackReceiver _receiver;
    private readonly Dictionary<WgKey, StandIn> _byPeer = [];
    private readonly ConcurrentDictionary<uint, StandIn> _byAddress = new();
    private readonly StandInAddressPool _addresses = new();
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _receiveLoop;
    private bool _disposed;
    private bool _failing; // touched only by the receive loop

    /// <summary>Opens the socket and starts receiving. Throws <see cref="SocketException"/> if no socket can be opened.</summary>
    /// <param name="time">The clock of the error backoff and the stop timeout; the system clock when null.</param>
    public LoopbackActivityMonitor(IActivityListener listener, ILogger logger, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(listener);
        ArgumentNullException.ThrowIfNull(logger);
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _reporter = new ActivityReporter(listener, logger);
        _receiver = LoopbackReceiver.Open(logger);
        _socket = _receiver.Socket;
        _receiveLoop = Task.Run(() => ReceiveLoopAsync(_stop.Token));
        _logger.LogDebug("Lazy: activity socket listens on 0.0.0.0:{Port} (lo only: {BoundToLoopback})", Port, BoundToLoopback);
    }

    /// <summary>The port every stand-in endpoint uses.</summary>
    public int Port => _receiver.Port;

    /// <summary>Whether SO_BINDTODEVICE "lo" took effect (else only the address checks keep foreign datagrams out).</summary>
    public bool BoundToLoopback => _receiver.BoundToLoopback;

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _byPeer.Count;
            }
        }
    }

    /// <summary>Datagrams handed to the listener (including those it failed on).</summary>
    public long DatagramsReported => _reporter.Reported;

    /// <summary>Datagrams dropped: to an address nobody watches, from a source outside 127/8, or malformed.</summary>
    public long DatagramsDropped => _reporter.Dropped;

    /// <summary>Datagrams the listener threw on (each peer's first failure is logged).</summary>
    public long ListenerFailures => _reporter.ListenerFailures;

    /// <summary>Datagrams the kernel dropped before the monitor saw them, because the socket's queue was full.</summary>
    public long DatagramsLostInKernel => _receiver.KernelDrops;

    public IPEndPoint Watch(WgKey peer)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_byPeer.TryGetValue(peer, out var existing))
            {
                return existing.ToEndPoint();
            }

            var address = _addresses.Rent();
            var standIn = new StandIn(peer, address, Port);
            _byPeer.Add(peer, standIn);
            _byAddress[address] = standIn;
            return standIn.ToEndPoint();
        }
    }

    public void Unwatch(WgKey peer)
    {
        lock (_lock)
        {
            if (_disposed || !_byPeer.Remove(peer, out var standIn))
            {
                return;
            }

            standIn.Deactivate();
            _byAddress.TryRemove(standIn.Address, out _);
            _addresses.Return(standIn.Address);
        }
    }

    /// <summary>Closes the socket and waits (boundedly) for the receive loop to end.</summary>
    public async ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var standIn in _byPeer.Values)
            {
                standIn.Deactivate();
            }

            _byPeer.Clear();
            _byAddress.Clear();
        }

        await _stop.CancelAsync();
        _receiver.Dispose();
        try
        {
            await _receiveLoop.WaitAsync(StopTimeout, _time);
        }
        catch (TimeoutException)
        {
            _logger.LogWarning("Lazy: the activity socket's receive loop did not stop within {Timeout}", StopTimeout);
        }

        _stop.Dispose();
    }

    private async Task ReceiveLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                // A zero-byte peek only waits until a datagram is queued (it leaves it there); the receiver then
                // takes everything queued without waiting and without allocating.
                await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.Peek, cancellationToken);
            }
            catch (Exception e) when (cancellationToken.IsCancellationRequested || e is ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                NoteFailure(e.SocketErrorCode.ToString(), e);
                if (!await BackOffAsync(cancellationToken))
                {
                    return;
                }

                continue;
            }

            bool received;
            try
            {
                received = ReceiveQueued();
            }
            catch (ObjectDisposedException)
            {
                return; // closed between the wait and the receive
            }
            catch (Exception e)
            {
                // Never stop watching silently: idle peers would then wait for traffic that is never reported.
                NoteFailure("unexpected", e);
                received = false;
            }

            if (received)
            {
                NoteSuccess();
            }
            else if (!await BackOffAsync(cancellationToken))
            {
                return;
            }
        }
    }

    /// <summary>Reports or drops what is queued; false when receiving failed (the caller backs off).</summary>
    private bool ReceiveQueued()
    {
        for (var i = 0; i < MaxDatagramsPerWakeup; i++)
        {
            switch (_receiver.TryReceive())
            {
                case LoopbackReceiver.Outcome.Empty:
                    return true;
                case LoopbackReceiver.Outcome.Failed:
                    NoteFailure($"errno {_receiver.LastError}", null);
                    return false;
                case LoopbackReceiver.Outcome.Malformed:
                    _reporter.Drop();
                    break;
                default:
                    Dispatch();
                    break;
            }
        }

        return true;
    }

    private void Dispatch()
    {
        if (StandInAddressPool.IsLoopback(_receiver.Source)
            && StandInAddressPool.Contains(_receiver.Destination)
            && _byAddress.TryGetValue(_receiver.Destination, out var standIn))
        {
            _reporter.Report(standIn, _receiver.Datagram);
            return;
        }

        _reporter.Drop();
    }

    // A lasting failure is logged once, not every back-off (10 times a second); its end is logged too.
    private void NoteFailure(string error, Exception? exception)
    {
        if (!_failing)
        {
            _failing = true;
            _logger.LogError(exception, "Lazy: the activity socket failed ({Error}); idle peers' traffic goes unnoticed until it recovers, retrying with backoff (up to every {Backoff})", error, MaxErrorBackoff);
        }
    }

    private void NoteSuccess()
    {
        if (_failing)
        {
            _failing = false;
            _errorBackoff.Reset();
            _logger.LogInformation("Lazy: the activity socket works again");
        }
    }

    private async Task<bool> BackOffAsync(CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(_errorBackoff.Next(MaxErrorBackoff), _time, cancellationToken);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
