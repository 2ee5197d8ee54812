using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>
/// The outbound data path, TUN -> encrypt -> bind (wireguard-go's device/send.go): the TUN read
/// loop, routing each packet to its peer by destination, padding and in-place encryption, and the
/// hand-off of each peer's run of packets to the bind. Also the header size and the IP address
/// reader the receive path shares.
/// </summary>
public sealed partial class WgDevice
{
    private const int HeaderSize = MessageLayout.TransportHeaderSize;

    private void TunReadLoop()
    {
        var batch = Math.Max(1, _tun.BatchSize);
        var buffers = PacketBuffers.AllocateBatch(batch);

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
}
