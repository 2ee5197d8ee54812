using System.Buffers;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>
/// What the peer sends on its own (wireguard-go's peer half of device/send.go): packets staged
/// until a session exists and their flush, keepalives, and handshake initiations.
/// </summary>
internal sealed partial class Peer
{
    public int StagedCount
    {
        get
        {
            lock (SendLock)
            {
                return _staged.Count;
            }
        }
    }

    /// <summary>Queues a packet (copied, with headroom for the transport header) until a session exists; drops the oldest when full.</summary>
    public void Stage(ReadOnlySpan<byte> packet)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MessageLayout.TransportHeaderSize + packet.Length + 32);
        packet.CopyTo(buffer.AsSpan(MessageLayout.TransportHeaderSize));
        lock (SendLock)
        {
            if (_staged.Count >= ProtocolTimings.MaxStagedPackets)
            {
                ArrayPool<byte>.Shared.Return(_staged.Dequeue().Buffer);
            }

            _staged.Enqueue((buffer, packet.Length));
        }
    }

    /// <summary>True when packets are waiting (caller holds <see cref="SendLock"/>).</summary>
    public bool HasStagedUnlocked => _staged.Count > 0;

    /// <summary>Encrypts and sends staged packets if a session is up, else starts a handshake.</summary>
    public void SendStaged()
    {
        byte[][]? buffers = null;
        int[]? sizes = null;
        var count = 0;
        var rekey = false;
        List<byte[]> toReturn = [];
        lock (SendLock)
        {
            if (_staged.Count == 0)
            {
                return;
            }

            var keypair = UsableSendingKeypair();
            if (keypair is null || Endpoint.IsEmpty)
            {
                rekey = true;
            }
            else
            {
                buffers = new byte[_staged.Count][];
                sizes = new int[_staged.Count];
                while (_staged.TryDequeue(out var item))
                {
                    toReturn.Add(item.Buffer);
                    var length = _device.SealTransport(keypair, item.Buffer, item.Length, item.Buffer.Length);
                    if (length > 0)
                    {
                        buffers[count] = item.Buffer;
                        sizes[count] = length;
                        count++;
                    }
                }

                rekey = ShouldRekeyOnSend(keypair);
                if (count > 0)
                {
                    _device.SendToPeer(this, buffers, sizes, count, isData: true);
                }
            }
        }

        foreach (var buffer in toReturn)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        if (rekey)
        {
            SendHandshakeInitiation(isRetry: false);
        }
    }

    /// <summary>Sends an authenticated empty packet (or the staged packets, which serve the same purpose).</summary>
    public void SendKeepalive()
    {
        bool flushStaged;
        lock (SendLock)
        {
            flushStaged = _staged.Count > 0;
            if (!flushStaged)
            {
                var keypair = UsableSendingKeypair();
                if (keypair is not null)
                {
                    var length = _device.SealTransport(keypair, _keepaliveBuffer, 0, _keepaliveBuffer.Length);
                    if (length > 0)
                    {
                        _device.SendToPeer(this, [_keepaliveBuffer], [length], 1, isData: false);
                    }

                    return;
                }
            }
        }

        if (flushStaged)
        {
            SendStaged();
        }
        else
        {
            // No session: a keepalive cannot be sent, so start the handshake it was meant to keep up.
            SendHandshakeInitiation(isRetry: false);
        }
    }

    /// <summary>
    /// Crossing initiations: when both ends send one at once, each consumes the other's (which discards its own) and
    /// drops the response to its own, so neither can send until REKEY_TIMEOUT's retry, 5 s later (seen in ~40 % of
    /// connections through a routing peer that both ends open at once). The end with the greater public key keeps
    /// its own initiation and ignores the other's: the other end consumes ours, as WireGuard always does, and its
    /// response completes the handshake. Only while ours is pending, under REKEY_TIMEOUT old and sent to the very
    /// endpoint the other's came from: one sent to a lazy stand-in or a stale path must not hold off an initiation
    /// that can complete. A peer without this rule (kernel WireGuard, wireguard-go) is no worse off than before.
    /// </summary>
    internal bool KeepsOwnInitiationAgainst(WgEndpoint source, ReadOnlySpan<byte> localPublicKey)
    {
        Span<byte> remote = stackalloc byte[WgKey.Size];
        PublicKey.CopyTo(remote);
        lock (Handshake.Lock)
        {
            return Handshake.Stage == HandshakeStage.InitiationCreated
                && _lastInitiationSent is { } last && _time.GetElapsedTime(last) < ProtocolTimings.RekeyTimeout
                && _lastInitiationSentTo == source
                && localPublicKey.SequenceCompareTo(remote) > 0;
        }
    }

    /// <summary>Builds and sends an initiation, at most once per REKEY_TIMEOUT unless it is a retry.</summary>
    public void SendHandshakeInitiation(bool isRetry)
    {
        if (!_running || !_device.IsUp)
        {
            return;
        }

        if (!isRetry)
        {
            Volatile.Write(ref _handshakeAttempts, 0);
        }

        var message = new byte[MessageLayout.InitiationSize];
        var endpoint = Endpoint;
        lock (Handshake.Lock)
        {
            if (!isRetry && _lastInitiationSent is { } last && _time.GetElapsedTime(last) < ProtocolTimings.RekeyTimeout)
            {
                return;
            }

            _lastInitiationSent = _time.GetTimestamp();
            _lastInitiationSentTo = endpoint;
            var identity = _device.Identity;
            if (identity is null || endpoint.IsEmpty)
            {
                return;
            }

            _device.Indices.RemoveHandshake(Handshake.LocalIndex, Handshake);
            var index = _device.Indices.NewHandshakeIndex(this, Handshake);
            Span<byte> timestamp = stackalloc byte[Tai64N.Size];
            Tai64N.Write(timestamp, _time.GetUtcNow());
            if (!NoiseProtocol.CreateInitiation(Handshake, identity, index, timestamp, message))
            {
                _device.Indices.Remove(index);
                if (_logger.IsEnabled(LogLevel.Debug))
                {
                    _logger.LogDebug("Peer {Peer}: cannot create a handshake initiation (bad key)", PublicKey.ToShortString());
                }

                return;
            }

            Cookies.AddMacs(message);
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: sending handshake initiation{Retry}", PublicKey.ToShortString(), isRetry ? " (retry)" : "");
        }

        OnAnyAuthenticatedPacketTraversal();
        OnAnyAuthenticatedPacketSent();

        // Armed before sending: the response may be processed (and stop this timer) before Send returns.
        RetransmitHandshake.Set(ProtocolTimings.RekeyTimeout + Jitter());
        _device.SendHandshakeMessage(this, message, endpoint);
    }

    private void DropStaged()
    {
        lock (SendLock)
        {
            while (_staged.TryDequeue(out var item))
            {
                ArrayPool<byte>.Shared.Return(item.Buffer);
            }
        }
    }
}
