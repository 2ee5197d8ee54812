using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

public sealed partial class WgDevice
{
    private const int HeaderSize = MessageLayout.TransportHeaderSize;

    // ---- outbound: TUN -> encrypt -> bind ----

    private void TunReadLoop()
    {
        var batch = Math.Max(1, _tun.BatchSize);
        var buffers = new byte[batch][];
        for (var i = 0; i < batch; i++)
        {
            buffers[i] = new byte[PacketBuffers.MaxSegmentSize];
        }

        var sizes = new int[batch];
        var groupBuffers = new byte[batch][];
        var groupSizes = new int[batch];
        var stagedPeers = new List<Peer>();
        var rekeyPeers = new List<Peer>();
        while (true)
        {
            int count;
            try
            {
                count = _tun.Read(buffers, sizes, HeaderSize);
            }
            catch (Exception ex) when (ex is ObjectDisposedException or IOException or InvalidOperationException)
            {
                if (!_disposed)
                {
                    _logger.LogInformation("TUN {Name} closed: {Reason}", _tun.Name, ex.Message);
                }

                break;
            }
            catch (Exception ex)
            {
                _logger.LogWarning(ex, "TUN {Name} read failed", _tun.Name);
                continue;
            }

            if (!_up)
            {
                continue;
            }

            try
            {
                ProcessOutbound(buffers, sizes, count, groupBuffers, groupSizes, stagedPeers, rekeyPeers);
            }
            catch (Exception ex)
            {
                // A bug here must not kill the interface; the batch is lost, the loop goes on.
                _logger.LogError(ex, "Outbound batch failed");
            }
        }

        RaiseClosed();
    }

    internal void ProcessOutbound(byte[][] buffers, int[] sizes, int count, byte[][] groupBuffers, int[] groupSizes, List<Peer> stagedPeers, List<Peer> rekeyPeers)
    {
        Peer? groupPeer = null;
        var groupCount = 0;
        stagedPeers.Clear();
        rekeyPeers.Clear();
        Span<byte> destination = stackalloc byte[16];
        var filter = PacketFilter;
        for (var i = 0; i < count; i++)
        {
            var buffer = buffers[i];
            var size = sizes[i];
            var packet = buffer.AsSpan(HeaderSize, size);
            if (filter is not null && !filter.AllowOutbound(packet))
            {
                continue;
            }

            var addressLength = ReadAddress(packet, destination, source: false);
            var peer = addressLength == 0 ? null : _allowedIps.Lookup(destination[..addressLength]);
            if (peer is null || !peer.IsRunning)
            {
                CountDrop();
                continue;
            }

            if (!ReferenceEquals(peer, groupPeer))
            {
                if (groupCount > 0)
                {
                    SendToPeer(groupPeer!, groupBuffers, groupSizes, groupCount, isData: true);
                }

                groupPeer = peer;
                groupCount = 0;
            }

            lock (peer.SendLock)
            {
                var keypair = peer.UsableSendingKeypair();
                if (keypair is null || peer.HasStagedUnlocked)
                {
                    peer.Stage(packet);
                    AddOnce(stagedPeers, peer);
                    continue;
                }

                var length = SealTransport(keypair, buffer, size, buffer.Length);
                if (length == 0)
                {
                    CountDrop();
                    continue;
                }

                groupBuffers[groupCount] = buffer;
                groupSizes[groupCount] = length;
                groupCount++;
                if (peer.ShouldRekeyOnSend(keypair))
                {
                    AddOnce(rekeyPeers, peer);
                }
            }
        }

        if (groupCount > 0)
        {
            SendToPeer(groupPeer!, groupBuffers, groupSizes, groupCount, isData: true);
        }

        foreach (var peer in stagedPeers)
        {
            peer.SendStaged();
        }

        foreach (var peer in rekeyPeers)
        {
            peer.SendHandshakeInitiation(isRetry: false);
        }
    }

    private static void AddOnce(List<Peer> peers, Peer peer)
    {
        if (!peers.Contains(peer))
        {
            peers.Add(peer);
        }
    }

    /// <summary>
    /// Encrypts buffer[16..16+plaintextLength] in place into a transport message starting at
    /// buffer[0], padding the plaintext to a multiple of 16 (not beyond the MTU). Returns the
    /// message length, or 0 when the keypair can no longer send.
    /// </summary>
    internal int SealTransport(Keypair keypair, byte[] buffer, int plaintextLength, int capacity)
    {
        var padded = PaddedLength(plaintextLength, _tun.Mtu);
        if (HeaderSize + padded + Crypto.Aead.TagSize > capacity)
        {
            padded = plaintextLength;
            if (HeaderSize + padded + Crypto.Aead.TagSize > capacity)
            {
                return 0;
            }
        }

        if (!keypair.TryNextCounter(out var counter))
        {
            return 0;
        }

        var span = buffer.AsSpan();
        span.Slice(HeaderSize + plaintextLength, padded - plaintextLength).Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(span, MessageLayout.TypeTransport);
        BinaryPrimitives.WriteUInt32LittleEndian(span[MessageLayout.TransportReceiver..], keypair.RemoteIndex);
        BinaryPrimitives.WriteUInt64LittleEndian(span[MessageLayout.TransportCounter..], counter);
        var payload = span.Slice(HeaderSize, padded + Crypto.Aead.TagSize);
        return keypair.Seal(counter, payload[..padded], payload) ? HeaderSize + padded + Crypto.Aead.TagSize : 0;
    }

    internal static int PaddedLength(int length, int mtu)
    {
        var padded = (length + 15) & ~15;
        if (mtu > 0 && length <= mtu && padded > mtu)
        {
            padded = mtu;
        }

        return Math.Max(padded, length);
    }

    /// <summary>Sends transport messages to the peer's endpoint and runs the "packet sent" timer rules.</summary>
    internal void SendToPeer(Peer peer, byte[][] buffers, int[] sizes, int count, bool isData)
    {
        var endpoint = peer.Endpoint;
        if (endpoint.IsEmpty)
        {
            Interlocked.Add(ref _dropped, count);
            return;
        }

        try
        {
            _bind.Send(buffers, sizes, count, endpoint);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Interlocked.Add(ref _dropped, count);
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                _logger.LogDebug("Send to {Endpoint} failed: {Reason}", endpoint, ex.Message);
            }

            return;
        }

        long bytes = 0;
        for (var i = 0; i < count; i++)
        {
            bytes += sizes[i];
        }

        peer.AddTx(bytes);
        peer.OnAnyAuthenticatedPacketTraversal();
        peer.OnAnyAuthenticatedPacketSent();
        if (isData)
        {
            peer.OnDataSent();
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

    /// <summary>Writes the IP packet's source or destination address; returns 4, 16, or 0 when it is not a valid IP header.</summary>
    private static int ReadAddress(ReadOnlySpan<byte> packet, Span<byte> address, bool source)
    {
        if (packet.Length >= 20 && packet[0] >> 4 == 4)
        {
            packet.Slice(source ? 12 : 16, 4).CopyTo(address);
            return 4;
        }

        if (packet.Length >= 40 && packet[0] >> 4 == 6)
        {
            packet.Slice(source ? 8 : 24, 16).CopyTo(address);
            return 16;
        }

        return 0;
    }

    // ---- inbound: bind -> decrypt -> TUN ----

    private void ReceiveLoop(ReceiveFunc receive)
    {
        var batch = Math.Max(1, _bind.BatchSize);
        var buffers = new byte[batch][];
        for (var i = 0; i < batch; i++)
        {
            buffers[i] = new byte[PacketBuffers.MaxSegmentSize];
        }

        var sizes = new int[batch];
        var endpoints = new WgEndpoint[batch];
        var tunBuffers = new byte[batch][];
        var tunSizes = new int[batch];
        while (true)
        {
            int count;
            try
            {
                count = receive(buffers, sizes, endpoints);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (Exception ex)
            {
                if (!_up || _disposed)
                {
                    return;
                }

                if (_logger.IsEnabled(LogLevel.Debug))
                {
                    _logger.LogDebug("Receive failed: {Reason}", ex.Message);
                }

                continue;
            }

            var tunCount = 0;
            var filter = PacketFilter;
            for (var i = 0; i < count; i++)
            {
                try
                {
                    var length = ProcessDatagram(buffers[i], sizes[i], endpoints[i]);
                    if (length > 0 && (filter is null || filter.AllowInbound(buffers[i].AsSpan(HeaderSize, length))))
                    {
                        tunBuffers[tunCount] = buffers[i];
                        tunSizes[tunCount] = length;
                        tunCount++;
                    }
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // Whatever a datagram contains, it is dropped, never allowed to end the loop.
                    CountDrop();
                    if (_logger.IsEnabled(LogLevel.Debug))
                    {
                        _logger.LogDebug("Dropped a datagram from {Endpoint}: {Reason}", endpoints[i], ex.Message);
                    }
                }
            }

            if (tunCount > 0)
            {
                try
                {
                    _tun.Write(tunBuffers, tunSizes, HeaderSize, tunCount);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    if (_logger.IsEnabled(LogLevel.Debug))
                    {
                        _logger.LogDebug("TUN write failed: {Reason}", ex.Message);
                    }
                }
            }
        }
    }

    /// <summary>Handles one received datagram; returns the length of the IP packet now at buffer[16..] to write to the TUN, or 0.</summary>
    internal int ProcessDatagram(byte[] buffer, int size, WgEndpoint source)
    {
        if (size > buffer.Length)
        {
            CountDrop();
            return 0;
        }

        var datagram = buffer.AsSpan(0, size);
        switch (MessageLayout.ReadType(datagram))
        {
            case MessageLayout.TypeTransport when size >= MessageLayout.TransportMinSize:
                return ReceiveTransport(buffer, size, source);
            case MessageLayout.TypeInitiation when size == MessageLayout.InitiationSize:
            case MessageLayout.TypeResponse when size == MessageLayout.ResponseSize:
            case MessageLayout.TypeCookieReply when size == MessageLayout.CookieReplySize:
                EnqueueHandshake(datagram, source);
                return 0;
            default:
                CountDrop();
                return 0;
        }
    }

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

    private int ReceiveTransport(byte[] buffer, int size, WgEndpoint source)
    {
        var span = buffer.AsSpan(0, size);
        var receiver = BinaryPrimitives.ReadUInt32LittleEndian(span[MessageLayout.TransportReceiver..]);
        if (!Indices.TryGet(receiver, out var entry) || entry.Keypair is not { } keypair
            || _time.GetElapsedTime(keypair.Created) >= ProtocolTimings.RejectAfterTime)
        {
            CountDrop();
            return 0;
        }

        var counter = BinaryPrimitives.ReadUInt64LittleEndian(span[MessageLayout.TransportCounter..]);
        var plaintextLength = size - MessageLayout.TransportMinSize;
        var plaintext = span.Slice(HeaderSize, plaintextLength);
        if (!keypair.Open(counter, span[HeaderSize..], plaintext) || !keypair.AcceptCounter(counter))
        {
            CountDrop();
            return 0;
        }

        var peer = entry.Peer;
        if (peer.Endpoint != source)
        {
            peer.Endpoint = source; // roaming: the last authenticated source wins
        }

        if (peer.ConfirmKeypair(keypair, Indices))
        {
            peer.OnHandshakeComplete();
            peer.SendStaged();
        }

        peer.OnAnyAuthenticatedPacketReceived();
        peer.OnAnyAuthenticatedPacketTraversal();
        peer.AddRx(size);
        if (peer.ShouldRekeyOnReceive(keypair))
        {
            peer.SendHandshakeInitiation(isRetry: false);
        }

        if (plaintextLength == 0)
        {
            return 0; // keepalive
        }

        peer.OnDataReceived();
        int packetLength;
        Span<byte> sourceAddress = stackalloc byte[16];
        var addressLength = ReadAddress(plaintext, sourceAddress, source: true);
        if (addressLength == 4)
        {
            packetLength = BinaryPrimitives.ReadUInt16BigEndian(plaintext[2..]);
            if (packetLength < 20 || packetLength > plaintextLength)
            {
                CountDrop();
                return 0;
            }
        }
        else if (addressLength == 16)
        {
            packetLength = 40 + BinaryPrimitives.ReadUInt16BigEndian(plaintext[4..]);
            if (packetLength > plaintextLength)
            {
                CountDrop();
                return 0;
            }
        }
        else
        {
            CountDrop();
            return 0;
        }

        if (!ReferenceEquals(_allowedIps.Lookup(sourceAddress[..addressLength]), peer))
        {
            CountDrop();
            // Per packet: the key string, the boxed arguments and their array are built only when Debug is on.
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                _logger.LogDebug("Peer {Peer} sent a packet from a source outside its allowed IPs", peer.PublicKey.ToShortString());
            }

            return 0;
        }

        return packetLength;
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
        var handshake = NoiseProtocol.ConsumeInitiation(
            message,
            identity,
            remoteStatic =>
            {
                peer = _peers.GetValueOrDefault(new WgKey(remoteStatic.Span));
                return peer is { IsRunning: true } ? peer.Handshake : null;
            },
            _time,
            ProtocolTimings.HandshakeInitiationRate);
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
}
