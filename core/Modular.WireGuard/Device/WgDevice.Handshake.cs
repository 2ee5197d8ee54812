using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>
/// Handshake messages (wireguard-go's handshake half of device/receive.go and device/noise-protocol.go):
/// the queue and thread that take them off the receive path, the cookie/load checks, answering an
/// initiation, completing on a response, taking a cookie reply, and sending handshake messages.
/// </summary>
public sealed partial class WgDevice
{
    /// <summary>Handshake messages wait here for the handshake thread, so a flood of them never stalls transport data.</summary>
    public const int HandshakeQueueCapacity = 1024;

    private readonly record struct HandshakeWork(byte[] Buffer, int Length, WgEndpoint Source);

    private void EnqueueHandshake(ReadOnlySpan<byte> datagram, WgEndpoint source)
    {
        var queue = _handshakeQueue;
        if (queue is null)
        {
            CountDrop();
            return;
        }

        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(datagram.Length);
        datagram.CopyTo(buffer);
        bool added;
        try
        {
            added = queue.TryAdd(new HandshakeWork(buffer, datagram.Length, source));
        }
        catch (InvalidOperationException)
        {
            added = false; // the device went down meanwhile
        }

        if (!added)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            CountDrop();
        }
    }

    private void HandshakeLoop(System.Collections.Concurrent.BlockingCollection<HandshakeWork> queue)
    {
        foreach (var work in queue.GetConsumingEnumerable())
        {
            try
            {
                var message = work.Buffer.AsSpan(0, work.Length);
                switch (MessageLayout.ReadType(message))
                {
                    case MessageLayout.TypeInitiation:
                        ReceiveInitiation(message, work.Source);
                        break;
                    case MessageLayout.TypeResponse:
                        ReceiveResponse(message, work.Source);
                        break;
                    default:
                        ReceiveCookieReply(message);
                        break;
                }
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                CountDrop();
                if (_logger.IsEnabled(LogLevel.Debug))
                {
                    _logger.LogDebug("Dropped a handshake message from {Endpoint}: {Reason}", work.Source, ex.Message);
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(work.Buffer);
            }
        }
    }

    /// <summary>mac1, then under load mac2 (answering with a cookie when missing). False: drop.</summary>
    private bool CheckHandshakeMacs(ReadOnlySpan<byte> message, WgEndpoint source, CookieChecker checker, bool isInitiation)
    {
        if (!checker.CheckMac1(message))
        {
            CountDrop();
            return false;
        }

        if (!IsUnderLoad())
        {
            return true;
        }

        if (!checker.CheckMac2(message, source))
        {
            var reply = new byte[MessageLayout.CookieReplySize];
            checker.CreateReply(message, source, reply);
            SendHandshakeMessage(null, reply, source);
            return false;
        }

        if (isInitiation && !_rateLimiter.Allow(source))
        {
            CountDrop();
            return false;
        }

        return true;
    }

    private void ReceiveInitiation(ReadOnlySpan<byte> message, WgEndpoint source)
    {
        var identity = _identity;
        var checker = _cookieChecker;
        if (identity is null || checker is null || !CheckHandshakeMacs(message, source, checker, isInitiation: true))
        {
            return;
        }

        Peer? peer = null;
        var keptOwn = false;
        var handshake = NoiseProtocol.ConsumeInitiation(
            message,
            identity,
            remoteStatic =>
            {
                peer = _peers.GetValueOrDefault(new WgKey(remoteStatic.Span));
                keptOwn = peer is { IsRunning: true } && peer.KeepsOwnInitiationAgainst(source, identity.PublicKey);
                return peer is { IsRunning: true } && !keptOwn ? peer.Handshake : null;
            },
            _time,
            ProtocolTimings.HandshakeInitiationRate);
        if (keptOwn && _logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: crossing handshake initiations; keeping ours (the greater key), the peer answers it", peer!.PublicKey.ToShortString());
        }

        if (handshake is null || peer is null)
        {
            CountDrop();
            return;
        }

        peer.Endpoint = source;
        peer.AddRx(message.Length);
        peer.OnAnyAuthenticatedPacketTraversal();
        peer.OnAnyAuthenticatedPacketReceived();
        var response = new byte[MessageLayout.ResponseSize];
        lock (handshake.Lock)
        {
            if (handshake.Stage != HandshakeStage.InitiationConsumed)
            {
                return;
            }

            Indices.RemoveHandshake(handshake.LocalIndex, handshake);
            var index = Indices.NewHandshakeIndex(peer, handshake);
            if (!NoiseProtocol.CreateResponse(handshake, index, response))
            {
                Indices.Remove(index);
                handshake.Clear();
                return;
            }

            var keys = NoiseProtocol.DeriveSessionKeys(handshake);
            if (keys is null)
            {
                Indices.Remove(index);
                return;
            }

            peer.InstallSession(keys.Value, Indices);
        }

        peer.Cookies.AddMacs(response);
        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: answered handshake initiation from {Endpoint}", peer.PublicKey.ToShortString(), source);
        }

        // The timer rules run before the send: once the response is out, the initiator's first data can
        // arrive and arm the keepalive timer, which a late "packet sent" would then stop, so this side
        // would never answer receive-only traffic with a keepalive.
        peer.OnSessionDerived();
        peer.OnAnyAuthenticatedPacketSent();
        SendHandshakeMessage(peer, response, source);
    }

    private void ReceiveResponse(ReadOnlySpan<byte> message, WgEndpoint source)
    {
        var identity = _identity;
        var checker = _cookieChecker;
        if (identity is null || checker is null || !CheckHandshakeMacs(message, source, checker, isInitiation: false))
        {
            return;
        }

        var receiver = BinaryPrimitives.ReadUInt32LittleEndian(message[MessageLayout.ResponseReceiver..]);
        if (!Indices.TryGet(receiver, out var entry) || entry.Handshake is not { } handshake || !entry.Peer.IsRunning)
        {
            CountDrop();
            return;
        }

        var peer = entry.Peer;
        lock (handshake.Lock)
        {
            if (!NoiseProtocol.ConsumeResponse(handshake, identity, message))
            {
                CountDrop();
                return;
            }

            var keys = NoiseProtocol.DeriveSessionKeys(handshake);
            if (keys is null)
            {
                return;
            }

            peer.InstallSession(keys.Value, Indices);
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: handshake completed", peer.PublicKey.ToShortString());
        }

        peer.Endpoint = source;
        peer.AddRx(message.Length);
        peer.OnAnyAuthenticatedPacketTraversal();
        peer.OnAnyAuthenticatedPacketReceived();
        peer.OnHandshakeComplete();
        peer.OnSessionDerived();
        peer.SendKeepalive(); // confirms the session to the responder (or flushes what was staged)
    }

    private void ReceiveCookieReply(ReadOnlySpan<byte> message)
    {
        var receiver = BinaryPrimitives.ReadUInt32LittleEndian(message[MessageLayout.CookieReceiver..]);
        if (!Indices.TryGet(receiver, out var entry) || !entry.Peer.Cookies.ConsumeReply(message))
        {
            CountDrop();
            return;
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: received a cookie (the peer is under load)", entry.Peer.PublicKey.ToShortString());
        }
    }

    internal void SendHandshakeMessage(Peer? peer, byte[] message, WgEndpoint endpoint)
    {
        try
        {
            _bind.Send([message], [message.Length], 1, endpoint);
            peer?.AddTx(message.Length);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                _logger.LogDebug("Handshake send to {Endpoint} failed: {Reason}", endpoint, ex.Message);
            }
        }
    }

    /// <summary>
    /// Counts handshake messages per second (and watches the handshake queue, as wireguard-go does); past the threshold the device is under load for at
    /// least a second, during which cookies are required.
    /// </summary>
    private bool IsUnderLoad()
    {
        var now = _time.GetTimestamp();
        lock (_loadLock)
        {
            if (_time.GetElapsedTime(_loadWindowStart, now) >= TimeSpan.FromSeconds(1))
            {
                _loadWindowStart = now;
                _loadWindowCount = 0;
            }

            _loadWindowCount++;
            if (_loadWindowCount > UnderLoadHandshakesPerSecond || (_handshakeQueue?.Count ?? 0) >= HandshakeQueueCapacity / 8)
            {
                _underLoadUntil = now + (long)(_time.TimestampFrequency * 1.0);
            }

            return now < _underLoadUntil;
        }
    }
}
