using Microsoft.Extensions.Logging;

namespace Modular.WireGuard.Device;

/// <summary>
/// The peer's protocol timers and the events that arm and stop them (wireguard-go's device/timers.go;
/// wireguard.com/papers, 6.1-6.5). Each <see cref="PeerTimer"/> is created in the constructor.
/// </summary>
internal sealed partial class Peer
{
    public PeerTimer RetransmitHandshake { get; }

    public PeerTimer SendKeepaliveTimer { get; }

    public PeerTimer NewHandshake { get; }

    public PeerTimer ZeroKeyMaterial { get; }

    public PeerTimer PersistentKeepaliveTimer { get; }

    /// <summary>Data was sent: expect an answer within KEEPALIVE + REKEY_TIMEOUT, else re-handshake.</summary>
    public void OnDataSent()
    {
        if (!NewHandshake.IsPending)
        {
            NewHandshake.Set(ProtocolTimings.KeepaliveTimeout + ProtocolTimings.RekeyTimeout + Jitter());
        }
    }

    /// <summary>Data was received: answer with a keepalive if we send nothing for KEEPALIVE_TIMEOUT.</summary>
    public void OnDataReceived()
    {
        if (!SendKeepaliveTimer.IsPending)
        {
            SendKeepaliveTimer.Set(ProtocolTimings.KeepaliveTimeout);
        }
        else
        {
            _needAnotherKeepalive = true;
        }
    }

    public void OnAnyAuthenticatedPacketSent() => SendKeepaliveTimer.Stop();

    public void OnAnyAuthenticatedPacketReceived() => NewHandshake.Stop();

    public void OnAnyAuthenticatedPacketTraversal()
    {
        var interval = PersistentKeepalive;
        if (interval > TimeSpan.Zero)
        {
            PersistentKeepaliveTimer.Set(interval);
        }
    }

    public void OnHandshakeComplete()
    {
        RetransmitHandshake.Stop();
        Volatile.Write(ref _handshakeAttempts, 0);
    }

    public void OnSessionDerived() => ZeroKeyMaterial.Set(ProtocolTimings.ZeroKeysAfter);

    private void OnRetransmitHandshake()
    {
        if (!_running)
        {
            return;
        }

        var attempts = Interlocked.Increment(ref _handshakeAttempts);
        if (attempts > ProtocolTimings.MaxHandshakeAttempts)
        {
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                _logger.LogDebug("Peer {Peer}: handshake did not complete after {Attempts} attempts, giving up", PublicKey.ToShortString(), attempts);
            }

            SendKeepaliveTimer.Stop();
            DropStaged();
            if (!ZeroKeyMaterial.IsPending)
            {
                ZeroKeyMaterial.Set(ProtocolTimings.ZeroKeysAfter);
            }

            return;
        }

        SendHandshakeInitiation(isRetry: true);
    }

    private void OnSendKeepalive()
    {
        if (!_running)
        {
            return;
        }

        SendKeepalive();
        if (_needAnotherKeepalive)
        {
            _needAnotherKeepalive = false;
            SendKeepaliveTimer.Set(ProtocolTimings.KeepaliveTimeout);
        }
    }

    private void OnNewHandshake()
    {
        if (!_running)
        {
            return;
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: no reply for {Seconds} s after sending data, new handshake", PublicKey.ToShortString(), (ProtocolTimings.KeepaliveTimeout + ProtocolTimings.RekeyTimeout).TotalSeconds);
        }

        SendHandshakeInitiation(isRetry: false);
    }

    private void OnZeroKeyMaterial()
    {
        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: erasing session keys", PublicKey.ToShortString());
        }

        ZeroKeys();
    }

    private void OnPersistentKeepalive()
    {
        if (_running && PersistentKeepalive > TimeSpan.Zero)
        {
            SendKeepalive();
        }
    }

    private static TimeSpan Jitter() => TimeSpan.FromMilliseconds(Random.Shared.Next(0, (int)ProtocolTimings.RekeyTimeoutJitterMax.TotalMilliseconds + 1));
}
