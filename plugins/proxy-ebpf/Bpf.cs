using System.Buffers.Binary;
using System.ComponentModel;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Modular.Plugins.ProxyEbpf;

/// <summary>
/// The few bpf(2) commands the eBPF proxy needs, called directly (no libbpf): create a map, update and delete an
/// element, load a program, attach it with a link. Every object is a file descriptor the process owns, so the kernel
/// frees the program, its maps and the link when the agent closes them or dies (SIGKILL included): nothing is pinned
/// and nothing can be left behind. The attribute blocks are laid out as union bpf_attr in linux/bpf.h (stable ABI).
/// </summary>
internal static class Bpf
{
    public const int MapTypeHash = 1;
    public const int MapTypeArray = 2;
    public const int ProgTypeSchedCls = 3;
    public const int AttachTcxIngress = 46; // BPF_TCX_INGRESS, Linux 6.6+

    private const int CmdMapCreate = 0;
    private const int CmdMapUpdateElem = 2;
    private const int CmdMapDeleteElem = 3;
    private const int CmdProgLoad = 5;
    private const int CmdLinkCreate = 28;
    private const int AttrSize = 144; // sizeof(union bpf_attr) in the headers this was written against; the kernel accepts any size with zeros past what it knows
    private const int Enoent = 2;
    private const int VerifierLogBytes = 1 << 16;

    /// <summary>Creates a map; <paramref name="name"/> (up to 15 characters) shows in `bpftool map`.</summary>
    public static SafeFileHandle CreateMap(int type, int keySize, int valueSize, int maxEntries, string name)
    {
        var attr = new byte[AttrSize];
        BinaryPrimitives.WriteInt32LittleEndian(attr, type);
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(4), keySize);
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(8), valueSize);
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(12), maxEntries);
        WriteName(attr.AsSpan(28, 16), name);
        return new SafeFileHandle((nint)Call(CmdMapCreate, attr, $"creating map {name}"), ownsHandle: true);
    }

    /// <summary>Sets <paramref name="key"/> to <paramref name="value"/> (BPF_ANY).</summary>
    public static void Update(SafeFileHandle map, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        var keyCopy = GC.AllocateArray<byte>(key.Length, pinned: true);
        var valueCopy = GC.AllocateArray<byte>(value.Length, pinned: true);
        key.CopyTo(keyCopy);
        value.CopyTo(valueCopy);
        var attr = ElementAttr(map, keyCopy);
        BinaryPrimitives.WriteInt64LittleEndian(attr.AsSpan(16), Marshal.UnsafeAddrOfPinnedArrayElement(valueCopy, 0));
        WithFd(map, () => Call(CmdMapUpdateElem, attr, "updating a map element"));
        GC.KeepAlive(keyCopy);
        GC.KeepAlive(valueCopy);
    }

    /// <summary>Removes <paramref name="key"/>; a key that is not there is fine.</summary>
    public static void Delete(SafeFileHandle map, ReadOnlySpan<byte> key)
    {
        var keyCopy = GC.AllocateArray<byte>(key.Length, pinned: true);
        key.CopyTo(keyCopy);
        var attr = ElementAttr(map, keyCopy);
        WithFd(map, () => Call(CmdMapDeleteElem, attr, "deleting a map element", allowErrno: Enoent));
        GC.KeepAlive(keyCopy);
    }

    /// <summary>
    /// Loads <paramref name="instructions"/>; on a refusal the exception carries the verifier's log (the load is
    /// repeated with logging on, so the fast path costs no log buffer).
    /// </summary>
    public static SafeFileHandle LoadProgram(int type, int expectedAttachType, ReadOnlySpan<byte> instructions, string license, string name)
    {
        var insns = GC.AllocateArray<byte>(instructions.Length, pinned: true);
        instructions.CopyTo(insns);
        var licenseBytes = GC.AllocateArray<byte>(Encoding.ASCII.GetByteCount(license) + 1, pinned: true);
        Encoding.ASCII.GetBytes(license, licenseBytes);
        var attr = new byte[AttrSize];
        BinaryPrimitives.WriteInt32LittleEndian(attr, type);
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(4), instructions.Length / 8);
        BinaryPrimitives.WriteInt64LittleEndian(attr.AsSpan(8), Marshal.UnsafeAddrOfPinnedArrayElement(insns, 0));
        BinaryPrimitives.WriteInt64LittleEndian(attr.AsSpan(16), Marshal.UnsafeAddrOfPinnedArrayElement(licenseBytes, 0));
        WriteName(attr.AsSpan(48, 16), name);
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(68), expectedAttachType);
        try
        {
            return new SafeFileHandle((nint)Call(CmdProgLoad, attr, $"loading program {name}"), ownsHandle: true);
        }
        catch (Win32Exception first)
        {
            var log = GC.AllocateArray<byte>(VerifierLogBytes, pinned: true);
            BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(24), 1);
            BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(28), log.Length);
            BinaryPrimitives.WriteInt64LittleEndian(attr.AsSpan(32), Marshal.UnsafeAddrOfPinnedArrayElement(log, 0));
            var fd = syscall(SyscallNumber, CmdProgLoad, Marshal.UnsafeAddrOfPinnedArrayElement(attr, 0), attr.Length);
            if (fd >= 0)
            {
                return new SafeFileHandle((nint)fd, ownsHandle: true); // loaded the second time: nothing to report
            }

            var text = Encoding.ASCII.GetString(log, 0, Math.Max(0, Array.IndexOf(log, (byte)0))).Trim();
            var tail = text.Length > 600 ? "..." + text[^600..] : text;
            throw new Win32Exception(first.NativeErrorCode, tail.Length > 0 ? $"{first.Message}; verifier: {tail}" : first.Message);
        }
        finally
        {
            GC.KeepAlive(insns);
            GC.KeepAlive(licenseBytes);
        }
    }

    /// <summary>Attaches <paramref name="program"/> to <paramref name="ifindex"/> with a link: detached when the returned handle closes.</summary>
    public static SafeFileHandle CreateLink(SafeFileHandle program, int ifindex, int attachType)
    {
        var attr = new byte[AttrSize];
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(4), ifindex);
        BinaryPrimitives.WriteInt32LittleEndian(attr.AsSpan(8), attachType);
        var fd = WithFd(program, () =>
        {
            BinaryPrimitives.WriteInt32LittleEndian(attr, (int)program.DangerousGetHandle());
            return Call(CmdLinkCreate, attr, "attaching the program to lo (tcx ingress)");
        });
        return new SafeFileHandle((nint)fd, ownsHandle: true);
    }

    /// <summary>The index of the interface <paramref name="name"/> in this network namespace.</summary>
    public static int InterfaceIndex(string name)
    {
        var index = if_nametoindex(name);
        return index != 0 ? (int)index : throw new Win32Exception(Marshal.GetLastPInvokeError(), $"no interface {name}");
    }

    private static long SyscallNumber => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 321,
        Architecture.Arm64 => 280,
        var other => throw new PlatformNotSupportedException($"bpf(2) is not wired up for {other}"),
    };

    private static byte[] ElementAttr(SafeFileHandle map, byte[] pinnedKey)
    {
        var attr = new byte[AttrSize];
        BinaryPrimitives.WriteInt32LittleEndian(attr, (int)map.DangerousGetHandle());
        BinaryPrimitives.WriteInt64LittleEndian(attr.AsSpan(8), Marshal.UnsafeAddrOfPinnedArrayElement(pinnedKey, 0));
        return attr;
    }

    private static long WithFd(SafeFileHandle handle, Func<long> call)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return call();
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private static long Call(int command, byte[] attr, string what, int allowErrno = 0)
    {
        var pinned = GCHandle.Alloc(attr, GCHandleType.Pinned);
        try
        {
            var result = syscall(SyscallNumber, command, pinned.AddrOfPinnedObject(), attr.Length);
            if (result >= 0)
            {
                return result;
            }

            var errno = Marshal.GetLastPInvokeError();
            if (errno == allowErrno)
            {
                return 0;
            }

            var error = new Win32Exception(errno);
            throw new Win32Exception(errno, $"{what}: {error.Message} (errno {errno})");
        }
        finally
        {
            pinned.Free();
        }
    }

    private static void WriteName(Span<byte> destination, string name)
    {
        var length = Math.Min(name.Length, destination.Length - 1);
        Encoding.ASCII.GetBytes(name.AsSpan(0, length), destination);
    }

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern long syscall(long number, long command, nint attr, long size);

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern uint if_nametoindex([MarshalAs(UnmanagedType.LPStr)] string name);
}
