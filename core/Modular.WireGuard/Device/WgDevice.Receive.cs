using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>
/// The inbound data path, bind -> decrypt -> TUN (wireguard-go's device/receive.go): one receive
/// loop per bind receive function, sorting datagrams into transport data (decrypted, checked
/// against the peer's allowed IPs and written to the TUN in batches) and handshake messages (queued
/// for <see cref="HandshakeLoop"/>).
/// </summary>
public sealed partial class WgDevice
{
    private void ReceiveLoop(ReceiveFunc receive)
    {
        var batch = Math.Max(1, _bind.BatchSize);
        var buffers = PacketBuffers.AllocateBatch(batch);

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
}
