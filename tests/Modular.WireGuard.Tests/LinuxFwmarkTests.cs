using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Testing;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Device;

namespace Modular.WireGuard.Tests;

/// <summary>The UAPI fwmark reaching the UDP socket as SO_MARK (read back with getsockopt).</summary>
public class LinuxFwmarkTests
{
    [SkippableFact]
    public void UdpBindMarksItsSocketNowAndAfterReopening()
    {
        Prerequisites.RequireRoot();
        using var bind = new UdpBind();
        bind.SetMark(0x1234);
        Assert.Null(bind.SocketMark);

        bind.Open(0, out _);
        Assert.Equal(0x1234u, bind.SocketMark);
        bind.SetMark(0xfeed);
        Assert.Equal(0xfeedu, bind.SocketMark);

        bind.Close();
        bind.Open(0, out _);
        Assert.Equal(0xfeedu, bind.SocketMark);
        bind.SetMark(0);
        Assert.Equal(0u, bind.SocketMark);
    }

    [SkippableFact]
    public void UapiFwmarkIsAppliedToTheDeviceSocket()
    {
        Prerequisites.RequireRoot();
        using var bind = new UdpBind();
        using var tun = new InMemoryTun("mark0");
        using var device = new WgDevice(tun, bind, NullLoggerFactory.Instance, TimeProvider.System);
        device.Up();

        Assert.Equal(0, device.IpcSet(new StringReader("fwmark=4660\n")));
        Assert.Equal(0x1234u, bind.SocketMark);
        Assert.Equal(0x1234u, device.Fwmark);

        var output = new StringWriter(CultureInfo.InvariantCulture);
        device.IpcGet(output);
        Assert.Contains("fwmark=4660\n", output.ToString());

        // A new port means a new socket: it gets the mark too. An empty value clears it.
        Assert.Equal(0, device.IpcSet(new StringReader("listen_port=0\n")));
        Assert.Equal(0x1234u, bind.SocketMark);
        Assert.Equal(0, device.IpcSet(new StringReader("fwmark=\n")));
        Assert.Equal(0u, bind.SocketMark);
        Assert.Equal(0u, device.Fwmark);
    }
}
